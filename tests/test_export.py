"""`frosted export onnx`: the graphs a user deploys elsewhere, what the manifest says of them, and the one-line
refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.errors import FrostedError
from facesplit.images import sample_image
from facesplit.noise import DEFAULT_PROFILE
from facesplit.noise.shipped import load_profile_for
from facesplit.preprocess import InputSize, preprocess
from facesplit.runtimes.export import export_onnx
from facesplit.runtimes.factory import head_runtime, tail_runtime
from tests.conftest import run_frosted
from tests.runtime_params import missing

pytestmark = pytest.mark.skipif(bool(missing("onnxruntime")), reason="the export needs 'frosted[onnx]'")


@pytest.mark.parametrize("profiles, sizes, split, named", [
    ([DEFAULT_PROFILE], ["1024x576"], "inception3",
     f"{DEFAULT_PROFILE} was fitted for input size 1024x1024: add --input-size 1024x1024"),
    ([DEFAULT_PROFILE], ["1024"], "rdcl", "not rdcl; pass --split inception3"),
    ([], ["native"], "rdcl", "not 'native'"),
])
def test_an_export_it_cannot_make_is_refused_before_any_file(tmp_path, faceboxes, profiles, sizes, split, named):
    with pytest.raises(FrostedError, match=named):
        export_onnx(SplitDetector(faceboxes), profiles, [InputSize.parse(s) for s in sizes], tmp_path, split)
    assert not list(tmp_path.iterdir())


def test_the_cli_refusal_is_one_line(tmp_path, weights_path):
    result = run_frosted("export", "onnx", "--out", str(tmp_path), "--weights", str(weights_path), "--noise",
                         DEFAULT_PROFILE, "--input-size", "1024x576")
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "add --input-size 1024x1024" in lines[0]


@pytest.mark.slow  # three graphs exported in a fresh process (~15 s)
def test_export_writes_the_head_and_the_profiles_tail(tmp_path, faceboxes, weights_path):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "graphs"
    result = run_frosted("export", "onnx", "--noise", DEFAULT_PROFILE, "--out", str(out), "--weights",
                         str(weights_path))
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    files = {g["file"]: g for g in manifest["graphs"]}
    assert set(files) == {"head-inception3-1024x1024.onnx", "head-inception3-1024x576.onnx",
                          f"tail-{DEFAULT_PROFILE}-1024x1024.onnx"}
    assert manifest["split"] == "inception3" and "no noise" in manifest["noise"]
    detector = at_split(SplitDetector(faceboxes), "inception3")
    profile = load_profile_for(detector, DEFAULT_PROFILE)
    tail_entry = files[f"tail-{DEFAULT_PROFILE}-1024x1024.onnx"]
    assert tail_entry["serves_fingerprint"] == profile.fingerprint  # the fingerprint the agent sends
    assert files["head-inception3-1024x576.onnx"]["input"] == {"name": "input", "shape": ["batch", 3, 576, 1024]}
    for name in files:
        graph = onnx.load(str(out / name))
        assert not {n.op_type for n in graph.graph.node} & {"RandomNormal", "RandomNormalLike", "RandomUniform"}
    # the files themselves, in a plain ONNX Runtime session: the head is the torch head; the tail is the
    # profile's noise-aware tail (not the clean one), at a batch of 3
    x = np.ascontiguousarray(preprocess(sample_image("astronaut"), InputSize(1024, 1024))[0].numpy())
    head = ort.InferenceSession(str(out / "head-inception3-1024x1024.onnx"), providers=["CPUExecutionProvider"])
    activation = head.run(None, {"input": x})[0]
    assert np.abs(activation - head_runtime("torch", detector).run(x)).max() <= 1e-4
    batch = np.repeat(activation, 3, axis=0) + np.random.default_rng(0).normal(0, 0.3, (3, *activation.shape[1:]))
    batch = batch.astype(np.float32)
    tail = ort.InferenceSession(str(out / f"tail-{DEFAULT_PROFILE}-1024x1024.onnx"),
                                providers=["CPUExecutionProvider"])
    loc, scores = tail.run(None, {"activation": batch})
    tuned_loc, tuned_scores = tail_runtime("torch", with_tail(detector, profile.tail_state)).run(batch)
    clean_scores = tail_runtime("torch", detector).run(batch)[1]
    assert np.abs(scores - tuned_scores).max() <= 1e-4 and np.abs(loc - tuned_loc).max() <= 1e-4
    assert np.abs(scores - clean_scores).max() > 1e-3
