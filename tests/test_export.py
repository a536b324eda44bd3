"""`frosted export onnx`: the graphs a user deploys elsewhere, what the manifest says of them, and the one-line
refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.errors import FrostedError
from facesplit.faceboxes import activation_shape
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
    assert result.returncode == 2, result.stderr[-2000:]  # options that contradict the profile: usage
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


def test_a_float16_export_is_refused_in_one_line(tmp_path, weights_path):
    result = run_frosted("export", "onnx", "--out", str(tmp_path / "graphs"), "--weights", str(weights_path),
                         "--precision", "float16")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "export without --precision" in lines[0], result.stderr
    assert not (tmp_path / "graphs").exists()


@pytest.mark.skipif(bool(missing("nncf")), reason="--precision int8 needs NNCF: pip install 'frosted[openvino]'")
def test_an_int8_export_with_an_unreadable_frame_writes_nothing(tmp_path, faceboxes, monkeypatch):
    monkeypatch.setenv("FROSTED_GRAPH_CACHE", str(tmp_path / "cache"))
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "camera.jpg").write_text("not a jpeg")
    out = tmp_path / "graphs"
    with pytest.raises(FrostedError, match=r"camera\.jpg: not a readable image"):
        export_onnx(SplitDetector(faceboxes), [], [InputSize(1024, 576)], out, "inception3", "int8", frames)
    assert not out.exists()


@pytest.mark.slow  # the float head exported and quantized in a fresh process (~15 s)
@pytest.mark.skipif(bool(missing("nncf")), reason="--precision int8 needs NNCF: pip install 'frosted[openvino]'")
def test_export_writes_the_int8_head_every_runtime_runs(tmp_path, faceboxes, weights_path, shared_dir, monkeypatch):
    import onnx
    import onnxruntime as ort

    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("2007_007763.jpg", "2008_001009.jpg"):
        (frames / name).write_bytes((shared_dir / "data/faces/dlib/images" / name).read_bytes())
    out = tmp_path / "graphs"
    monkeypatch.setenv("FROSTED_GRAPH_CACHE", str(tmp_path / "cache"))
    result = run_frosted("export", "onnx", "--out", str(out), "--weights", str(weights_path), "--split",
                         "inception3", "--input-size", "1024x576", "--precision", "int8", "--calibration", str(frames))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "head-inception3-1024x576-int8.onnx (head, split inception3, 1024x576, int8 for openvino)" in result.stderr
    assert "int8-signed.onnx (head, split inception3, 1024x576, int8 for tensorrt)" in result.stderr
    entries = [g for g in json.loads((out / "manifest.json").read_text())["graphs"] if g.get("precision")]
    assert [e["file"] for e in entries] == ["head-inception3-1024x576-int8.onnx",
                                            "head-inception3-1024x576-int8-signed.onnx"]
    assert all(e["calibration"]["frames"] == 2 for e in entries)
    graph, signed = out / entries[0]["file"], out / entries[1]["file"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(graph)).graph.node}
    # TensorRT's takes only signed int8 quantizers with zero point 0
    zero_points = {i.name: i for i in onnx.load(str(signed)).graph.initializer}
    quantizers = [n for n in onnx.load(str(signed)).graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers and all(zero_points[n.input[2]].data_type == onnx.TensorProto.INT8 for n in quantizers)
    assert not any(onnx.numpy_helper.to_array(zero_points[n.input[2]]).any() for n in quantizers)
    # the int8 head a runtime makes from the same frames, quantized afresh, is this file byte for byte
    from facesplit.runtimes.int8 import int8_graph

    detector = SplitDetector(faceboxes.at_split("inception3"), InputSize(1024, 576))
    assert int8_graph(detector, frames, tmp_path / "afresh", None)[0].read_bytes() == graph.read_bytes()
    x = np.ascontiguousarray(preprocess(sample_image("astronaut"), InputSize(1024, 576))[0].numpy())
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    difference = np.abs(session.run(None, {"input": x})[0] - head_runtime("torch", detector).run(x))
    assert 0 < float(difference.mean()) <= 0.05  # quantized: close, not equal


def test_a_damaged_graph_in_the_cache_is_exported_again(tmp_path, faceboxes, caplog):
    """The cache is the product's own: a graph truncated or overwritten there (a full disk, a user) is remade,
    with a warning, instead of each runtime's parser failing with its traceback."""
    from facesplit.runtimes.graphs import cached_graph

    pytest.importorskip("onnxruntime")
    detector = SplitDetector(faceboxes.at_split("inception3"), InputSize(1024, 576))
    path, _ = cached_graph(detector, "tail", "onnxruntime", tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole[:1000])
    with caplog.at_level("WARNING", logger="facesplit.runtimes.graphs"):
        again, _ = cached_graph(detector, "tail", "onnxruntime", tmp_path)
    assert again == path and len(path.read_bytes()) == len(whole)
    assert [r.getMessage() for r in caplog.records if "damaged graph" in r.getMessage()]
    x = np.zeros((1, *activation_shape(576, 1024)), np.float32)
    assert tail_runtime("onnxruntime", detector, graphs=tmp_path).run(x)[0].shape[0] == 1
