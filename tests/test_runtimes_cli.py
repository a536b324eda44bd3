"""`frosted runtimes`: what this machine can run, each answer the check that making the runtime meets first
(`facesplit.runtimes.factory.check_available`), so it says what `frosted edge` and `frosted tail` would do."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from facesplit.detector import SplitDetector
from facesplit.errors import FrostedError
from facesplit.runtimes import RUNTIME_NAMES
from facesplit.runtimes.factory import head_runtime, tail_runtime
from tests.conftest import invoke_frosted

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def listed(*args: str) -> list[dict]:
    result = invoke_frosted("runtimes", *args, "--json", "-")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def test_it_lists_every_combination_a_runtime_runs_and_no_other():
    rows = listed()
    # docs/runtimes.md's table: float16 on torch and TensorRT, int8 on OpenVINO and TensorRT, the GPU for all but
    # OpenVINO, and TensorRT only there
    expected = {("torch", "float32", "cpu"), ("torch", "float16", "cpu"), ("torch", "float32", "cuda"),
                ("torch", "float16", "cuda"), ("onnxruntime", "float32", "cpu"), ("onnxruntime", "float32", "cuda"),
                ("openvino", "float32", "cpu"), ("openvino", "int8", "cpu"), ("tensorrt", "float32", "cuda"),
                ("tensorrt", "float16", "cuda"), ("tensorrt", "int8", "cuda")}
    assert {(r["runtime"], r["precision"], r["device"]) for r in rows} == expected
    assert len(rows) == len(expected) and {r["runtime"] for r in rows} == set(RUNTIME_NAMES)
    for row in rows:
        assert (row["reason"] is None) == row["available"], row
        assert row["available"] or "\n" not in row["reason"]
    by = {(r["runtime"], r["precision"], r["device"]): r for r in rows}
    assert by["torch", "float32", "cpu"]["available"] and by["torch", "float32", "cpu"]["version"]
    # the dev extra installs every CPU runtime, and NNCF: all of them run here
    for key in (("onnxruntime", "float32", "cpu"), ("openvino", "float32", "cpu"), ("openvino", "int8", "cpu")):
        assert by[key]["available"], by[key]


def test_each_no_is_what_making_that_runtime_says(detector: SplitDetector):
    """One check: where the list says no, making the head (and, at float32, the tail) fails with its words, and
    before exporting anything."""
    noes = [row for row in listed() if not row["available"]]
    if not noes:
        pytest.skip("every runtime runs on this machine (a GPU with TensorRT)")
    for row in noes:
        with pytest.raises(FrostedError) as made:
            head_runtime(row["runtime"], detector, precision=row["precision"], device=row["device"])
        assert str(made.value) == row["reason"]
        if row["precision"] == "float32":
            with pytest.raises(FrostedError) as made:
                tail_runtime(row["runtime"], detector, device=row["device"])
            assert str(made.value) == row["reason"]


def test_asking_for_one_that_runs_exits_0_and_lists_it():
    result = invoke_frosted("runtimes", "--runtime", "openvino", "--precision", "int8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "openvino" and result.stdout.rstrip().endswith("yes")
    assert len(result.stdout.splitlines()) == 1


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_asking_for_one_that_cannot_run_fails_in_one_line_naming_the_extra():
    for args in (["--runtime", "tensorrt"], ["--runtime", "tensorrt", "--libraries-only"],
                 ["--runtime", "tensorrt", "--device", "cpu", "--precision", "int8"]):
        result = invoke_frosted("runtimes", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert result.stderr.strip() == ("Error: --runtime tensorrt needs TensorRT, which is not installed: "
                                         "pip install 'frosted[tensorrt]'"), args


def test_libraries_only_does_not_ask_for_a_gpu():
    """An image's build sees no GPU: with --libraries-only, torch on cuda is a yes wherever torch is installed
    (on this CPU machine without it, a no naming the missing GPU)."""
    checked = {(r["runtime"], r["device"]): r for r in listed("--runtime", "torch", "--libraries-only")}
    assert checked["torch", "cuda"]["available"]
    seen = {(r["runtime"], r["device"]): r for r in listed("--runtime", "torch")}
    import torch

    if not torch.cuda.is_available():
        assert not seen["torch", "cuda"]["available"] and "CUDA" in seen["torch", "cuda"]["reason"]


def test_a_missing_quantizer_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf now raises ImportError, as if not installed
    rows = {(r["runtime"], r["precision"]): r for r in listed("--device", "cpu")}
    assert not rows["openvino", "int8"]["available"]
    assert rows["openvino", "int8"]["reason"] == ("--precision int8 needs NNCF, which is not installed: "
                                                  "pip install 'frosted[openvino]'")
    assert rows["openvino", "float32"]["available"]


def test_a_combination_no_machine_runs_is_a_usage_error():
    result = invoke_frosted("runtimes", "--runtime", "openvino", "--device", "cuda")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("Error: --device cuda runs on --runtime torch, onnxruntime, "
                                                      "tensorrt, not openvino")


def test_an_unwritable_json_file_is_one_line(tmp_path: Path):
    (tmp_path / "a-file").write_text("")
    result = invoke_frosted("runtimes", "--json", str(tmp_path / "a-file" / "runtimes.json"))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "runtimes.json" in result.stderr
