"""The int8 head (`--precision int8`: one QDQ graph quantized by NNCF, run by OpenVINO or TensorRT) and OpenVINO's
pixel input: the int8 head is another head, so its parity with the float head is a stated tolerance and detections
that agree, not 1e-4; every runtime runs the same graph, so their parity with each other is int8 rounding; its
frames carry another fingerprint, which a tail serves only when told to."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cloud_tail.models import ServedTail, served_tails
from edge_agent.agent import EdgeAgent, TailMismatchError
from edge_agent.backend import RuntimeHeadBackend
from edge_agent.config import AgentConfig, ConfigError, load_agent_config
from facesplit.detector import SplitDetector
from facesplit.evaluation.ap import iou_matrix
from facesplit.images import read_image_bgr, sample_image
from facesplit.pipeline import EdgeHead
from facesplit.postprocess import PostprocessConfig
from facesplit.preprocess import BGR_MEAN, InputSize, letterbox_pixels, preprocess
from facesplit.runtimes import UnknownRuntimeError, fingerprint_at
from facesplit.runtimes.factory import detector_on, head_runtime
from facesplit.runtimes.int8 import CalibrationError, calibration_frames, cpu_has_vnni
from frosted.demo import make_clip
from frosted_wire.v1 import tail_pb2
from tests.conftest import invoke_frosted, run_frosted
from tests.rig.servers import free_port
from tests.runtime_fakes import FakeHead
from tests.runtime_params import missing
from tests.tail_helpers import PROFILE, start_tail_process, validated_copy

SIZE = InputSize(1024, 576)  # the default profile's split (inception3), 16:9 frames
CALIBRATION = ("2007_007763.jpg", "2008_001009.jpg", "2008_002079.jpg", "2008_002470.jpg")  # dlib photos
HELD_OUT = "data/faces/dlib/images/2008_001322.jpg"  # not calibrated on: 4 faces
# int8 vs float activations (which reach ~6-8 on photos): the largest difference measured on MIT+CMU folds 6-10
# was 2.2-2.8 (one element), the mean 0.02; the detections at the operating threshold must agree
MAX_ABS, MEAN_ABS, MIN_IOU = 3.0, 0.05, 0.8
# one int8 graph in two runtimes: they round the requantized activations differently (measured on MIT+CMU folds
# 6-10: at most 0.11, 0.003 on average), and a float16 head on a GPU is within its own tolerance of torch's
MAX_ACROSS, MEAN_ACROSS = 0.5, 0.02
# TensorRT's signed variant of the graph against OpenVINO's int8 head (measured on MIT+CMU folds 6-10: at most
# 0.83, 0.022 on average, as far as either is from the float head)
MAX_SIGNED, MEAN_SIGNED = 1.5, 0.05

needs_int8 = pytest.mark.skipif(bool(missing("openvino")) or bool(missing("nncf")),
                                reason="OpenVINO or NNCF not installed: pip install 'frosted[openvino]'")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, shared_dir):
    """A user's folder of frames: four photos (calibration only needs a few for a test)."""
    folder = tmp_path_factory.mktemp("frames")
    for name in CALIBRATION:
        shutil.copy(shared_dir / "data/faces/dlib/images" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def photos(shared_dir):
    return [sample_image("astronaut"), read_image_bgr(shared_dir / HELD_OUT)]


# ----------------------------------------------------------------------------- fast: no model

def test_pixels_are_the_model_input_before_the_mean():
    """A runtime that converts pixels itself sees exactly what `preprocess` gives the others, padding included."""
    frame = np.random.default_rng(0).integers(0, 256, (300, 700, 3), dtype=np.uint8)  # letterboxed: padded below
    pixels, box = letterbox_pixels(frame, SIZE)
    inputs, same_box = preprocess(frame, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (576, 1024, 3) and box == same_box
    assert np.array_equal(pixels.astype(np.float32) - BGR_MEAN, inputs.numpy()[0].transpose(1, 2, 0))
    hd = np.zeros((1080, 1920, 3), np.uint8)
    assert letterbox_pixels(hd, SIZE)[0].flags.c_contiguous  # 16:9: no padding, the resize itself


def test_an_int8_head_sends_another_fingerprint_and_a_float_tail_refuses_it():
    float_backend = RuntimeHeadBackend(FakeHead(), InputSize(320, 192), None, "clean-abc")
    int8_backend = RuntimeHeadBackend(FakeHead(), InputSize(320, 192), None, "clean-abc", precision="int8")
    assert float_backend.fingerprint == "clean-abc"
    assert int8_backend.fingerprint == fingerprint_at("clean-abc", "int8") != "clean-abc"
    assert int8_backend.fingerprint.startswith("int8-") and len(int8_backend.fingerprint) <= 32
    config = AgentConfig(tail={"address": "127.0.0.1:1", "insecure": True}, cameras=[{"id": "a", "url": "x.mp4"}])
    info = tail_pb2.TailInfo(profiles=[tail_pb2.ServedProfile(name="clean", fingerprint="clean-abc")],
                             accepted_dtypes=[tail_pb2.FLOAT16])
    EdgeAgent(config, float_backend, None).check_served(info)  # type: ignore[arg-type]
    with pytest.raises(TailMismatchError, match="does not serve this agent's profile"):
        EdgeAgent(config, int8_backend, None).check_served(info)  # type: ignore[arg-type]


def test_a_tail_told_to_serves_heads_at_other_precisions_under_their_fingerprints(faceboxes):
    detector = SplitDetector(faceboxes, InputSize(320, 192))
    tails = served_tails(detector, [], serve_clean=True, head_precisions=("int8", "float16", "int8"))
    assert len(tails) == 3
    clean = next(t for t in tails.values() if t.name == "clean")
    for precision in ("int8", "float16"):
        other = tails[fingerprint_at(clean.fingerprint, precision)]
        assert isinstance(other, ServedTail) and other.served_as == f"clean+{precision}-head"
        assert other.boxes is clean.boxes and other.precision == precision
    assert len(served_tails(detector, [], serve_clean=True)) == 1
    with pytest.raises(UnknownRuntimeError, match=r"^a tail serves heads at float16, int8 besides float32, "
                                                  r"not 'float32'$"):
        served_tails(detector, [], serve_clean=True, head_precisions=("float32",))


def test_a_profile_is_served_to_another_head_only_once_its_file_records_a_validation(faceboxes, tmp_path, caplog):
    detector = SplitDetector(faceboxes, InputSize(1024, 1024))
    tails = served_tails(detector, [PROFILE], head_precisions=("int8",))
    assert [t.served_as for t in tails.values()] == [PROFILE]  # the shipped alpha-0.2 records none
    assert f"not serving {PROFILE} to int8 heads: its AP was never measured on one" in caplog.text
    copy = validated_copy(tmp_path, PROFILE, "int8")
    tails = served_tails(detector, [str(copy)], head_precisions=("int8", "float16"))
    assert sorted(t.served_as for t in tails.values()) == [PROFILE, f"{PROFILE}+int8-head"]
    assert f"not serving {PROFILE} to float16 heads" in caplog.text


def test_the_default_profile_records_its_validations_on_int8_and_float16_heads():
    from facesplit.noise import DEFAULT_PROFILE
    from facesplit.noise.shipped import resolve_profile
    from facesplit.noise.validation import validated_heads

    records = validated_heads(resolve_profile(DEFAULT_PROFILE))
    assert set(records) == {"int8", "float16"}
    for record in records.values():
        assert record["by"] == "bench/precision_accuracy.py" and record["draws"] >= 20
        assert all(abs(d["mean"]) <= record["tolerance_points"] for d in record["ap_delta_points"].values())


def test_serve_precision_takes_only_the_other_precisions():
    result = invoke_frosted("tail", "--insecure", "--serve-precision", "float32")
    assert result.returncode == 2 and "'float32' is not one of 'float16', 'int8'" in result.stderr


def test_int8_needs_openvino_in_one_line(tmp_path):
    result = invoke_frosted("detect", "--sample", "astronaut", "--precision", "int8")
    assert result.returncode == 2 and "--precision int8 runs on --runtime openvino or tensorrt, not torch" in \
        result.stderr
    (tmp_path / "cameras.yaml").write_text("tail: {address: '127.0.0.1:1', insecure: true}\n"
                                           "cameras: [{id: a, url: x.mp4}]\nmodel: {precision: int8}\n")
    with pytest.raises(ConfigError, match="precision int8 runs on --runtime openvino or tensorrt, not torch"):
        load_agent_config(tmp_path / "cameras.yaml", {})


def test_an_agent_calibrated_on_other_frames_than_the_validation_is_warned(tmp_path):
    """The fingerprint says only "int8": the agent says, at start, when its int8 head is not the one measured."""
    from facesplit.noise.validation import DEFAULT_CALIBRATION, calibration_caveat, record_validation
    from frosted.commands.edge import warnings_for

    profile = validated_copy(tmp_path, PROFILE)
    assert calibration_caveat(profile, None) is None  # no int8 record: the tail refuses it anyway
    record_validation(profile, "int8", {"calibration": DEFAULT_CALIBRATION})
    site = tmp_path / "site-a"
    site.mkdir()
    assert calibration_caveat(profile, None) is None
    caveat = calibration_caveat(profile, site)
    assert caveat is not None and str(site.resolve()) in caveat and f"--calibration {site.resolve()}" in caveat
    base = {"tail": {"address": "h:1"}, "cameras": [{"id": "a", "url": "x.mp4"}], "noise": {"profile": str(profile)}}
    at_site = load_agent_config(None, {**base, "model": {"runtime": "openvino", "precision": "int8",
                                                         "calibration": str(site)}})
    assert [w for w in warnings_for(at_site) if "calibrated on" in w] == [f"WARNING: {caveat}"]
    default = load_agent_config(None, {**base, "model": {"runtime": "openvino", "precision": "int8"}})
    assert not [w for w in warnings_for(default) if "calibrated on" in w]
    record_validation(profile, "int8", {"calibration": str(site.resolve())})  # measured on the site's head
    assert not [w for w in warnings_for(at_site) if "calibrated on" in w]


def test_calibration_without_int8_is_refused_in_one_line(tmp_path):
    """Frames to calibrate on, given to a float head, would be ignored in silence: refused in every verb."""
    for verb in (("detect", "--sample", "astronaut"), ("export", "onnx", "--out", str(tmp_path / "graphs"))):
        result = invoke_frosted(*verb, "--calibration", str(tmp_path))
        assert result.returncode == 2 and "--calibration calibrates an int8 head, and this head is float32" in \
            result.stderr, result.stderr
    assert not (tmp_path / "graphs").exists()
    with pytest.raises(ConfigError, match="calibrates an int8 head, and this head is float16"):
        load_agent_config(None, {"tail": {"address": "h:1"}, "cameras": [{"id": "a", "url": "x.mp4"}],
                                 "model": {"precision": "float16", "calibration": str(tmp_path)}})


@pytest.mark.skipif(bool(missing("onnxruntime")), reason="needs ONNX Runtime: pip install 'frosted[onnx]'")
def test_unsigned_quantizers_become_signed_over_the_same_range():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from facesplit.runtimes.int8 import signed_activations

    def graph(zero: int) -> onnx.ModelProto:
        nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        return helper.make_model(helper.make_graph(
            nodes, "relu-qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])],
            [numpy_helper.from_array(np.array(0.01, np.float32), "s"),
             numpy_helper.from_array(np.array(zero, np.uint8), "z")],
            value_info=[helper.make_tensor_value_info("q", TensorProto.UINT8, [64])]),
            opset_imports=[helper.make_opsetid("", 13)])

    x = np.linspace(-1, 2.55, 64, dtype=np.float32)  # up to the unsigned quantizer's top, 255 * 0.01
    signed = signed_activations(graph(0))
    zero = next(t for t in signed.graph.initializer if t.name.startswith("z"))
    assert zero.data_type == TensorProto.INT8 and len(signed.graph.initializer) == 2  # the old pair is gone
    y = ort.InferenceSession(signed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    step = 0.01 * 255 / 127
    assert float(np.abs(y - np.maximum(x, 0)).max()) <= step / 2 + 1e-6  # the whole range, nothing clipped
    assert float(y.max()) > 2.5
    with pytest.raises(ValueError, match="asymmetric"):
        signed_activations(graph(3))


def test_calibration_needs_images(tmp_path):
    with pytest.raises(CalibrationError, match="no images"):
        calibration_frames(tmp_path)
    with pytest.raises(CalibrationError, match="no such folder"):
        calibration_frames(tmp_path / "absent")


def test_the_default_calibration_is_mitcmu_folds_1_to_5(shared_dir, monkeypatch):
    monkeypatch.setenv("FROSTED_SHARED", str(shared_dir))
    frames = calibration_frames()
    assert len(frames) == 50 and all("mitcmu" in str(f) for f in frames)
    monkeypatch.setenv("FROSTED_SHARED", str(shared_dir / "absent"))
    with pytest.raises(CalibrationError, match="give --calibration FOLDER"):
        calibration_frames()


# ----------------------------------------------------------------------------- the real heads, real photos

@pytest.mark.skipif(bool(missing("openvino")), reason="OpenVINO not installed: pip install 'frosted[openvino]'")
def test_openvino_on_pixels_matches_torch(faceboxes, photos, graphs):
    """The edge path on OpenVINO (pixels in, the mean subtracted in the compiled model) is the float head."""
    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE)
    head = head_runtime("openvino", detector, 1, graphs)
    for photo in photos:
        inputs = np.ascontiguousarray(preprocess(photo, SIZE)[0].numpy())
        expected = head_runtime("torch", detector).run(inputs)
        assert float(np.abs(EdgeHead(head, SIZE)(photo).activations - expected).max()) <= 1e-4


@needs_int8
def test_the_int8_head_is_close_to_float_and_finds_the_same_faces(faceboxes, photos, graphs, calibration):
    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE, PostprocessConfig(score_threshold=0.7))
    float_head = head_runtime("openvino", detector, 1, graphs)
    int8_head = head_runtime("openvino", detector, 1, graphs, precision="int8", calibration=calibration)
    inputs = np.concatenate([np.ascontiguousarray(preprocess(p, SIZE)[0].numpy()) for p in photos])
    a, b = float_head.run(inputs), int8_head.run(inputs)
    assert b.shape == a.shape and not np.array_equal(a, b)  # quantized: another head
    assert float(np.abs(a - b).max()) <= MAX_ABS and float(np.abs(a - b).mean()) <= MEAN_ABS
    pixels = np.stack([letterbox_pixels(p, SIZE)[0] for p in photos])
    assert np.array_equal(int8_head.run_pixels(pixels), b)  # type: ignore[attr-defined]
    exact = detector_on("openvino", detector, 1, graphs)
    quantized = detector_on("openvino", detector, 1, graphs, precision="int8", calibration=calibration)
    for photo in photos:
        want, got = exact.detect(photo), quantized.detect(photo)
        assert len(want) >= 1 and len(got) == len(want)
        assert float(iou_matrix(want[:, :4], got[:, :4]).max(axis=1).min()) >= MIN_IOU


@needs_int8
def test_the_int8_graph_is_cached_per_calibration(faceboxes, graphs, calibration, tmp_path):
    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE)
    from facesplit.runtimes.int8 import int8_graph

    first, _ = int8_graph(detector, calibration, graphs)
    assert int8_graph(detector, calibration, graphs)[0] == first and first.suffix == ".onnx"
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    shutil.copy(calibration / CALIBRATION[0], fewer / CALIBRATION[0])
    other, _ = int8_graph(detector, fewer, graphs)
    assert other != first and other.is_file()
    # the graph for a runtime whose int8 sums cannot saturate (a GPU) is this CPU's if it has VNNI, else its own
    assert (int8_graph(detector, calibration, graphs, "tensorrt")[0] == first) == cpu_has_vnni()


@needs_int8
def test_the_int8_graph_in_another_runtime_and_tensorrts_signed_variant(faceboxes, photos, graphs, calibration):
    """The int8 head is a QDQ graph: ONNX Runtime's int8 kernels on it give OpenVINO's int8 head to within int8
    rounding. TensorRT builds its signed variant (the same ranges at half the resolution after each ReLU): another
    rounding of the same quantization, held to a stated distance from OpenVINO's, run here in ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    from facesplit.runtimes.int8 import int8_graph, signed_graph

    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE)
    path, _ = int8_graph(detector, calibration, graphs, None)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    inputs = np.concatenate([np.ascontiguousarray(preprocess(p, SIZE)[0].numpy()) for p in photos])
    int8 = head_runtime("openvino", detector, 1, graphs, precision="int8", calibration=calibration).run(inputs)
    exact = head_runtime("torch", detector).run(inputs)
    same = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    across = np.abs(same - int8)
    assert float(across.max()) <= MAX_ACROSS and float(across.mean()) <= MEAN_ACROSS, \
        f"max {across.max():.3g}, mean {across.mean():.3g}"
    assert float(across.mean()) < float(np.abs(int8 - exact).mean()) / 2
    signed = ort.InferenceSession(str(signed_graph(path)), providers=["CPUExecutionProvider"])
    variant = np.abs(signed.run(None, {"input": inputs})[0] - int8)
    assert float(variant.max()) <= MAX_SIGNED and float(variant.mean()) <= MEAN_SIGNED, \
        f"max {variant.max():.3g}, mean {variant.mean():.3g}"
    assert float(variant.mean()) > 0  # it is another rounding, not the same graph


@pytest.mark.skipif(bool(missing("onnxruntime")), reason="ONNX Runtime is not installed: pip install 'frosted[onnx]'")
def test_tensorrts_float16_graph_is_half_inside_and_float32_at_its_ends(faceboxes, photos, graphs):
    """TensorRT 11 builds only strongly typed networks, so its float16 head is a graph made half, not a builder
    flag: every weight float16, the pixels in and the activation out float32 (what the agent feeds and sends).
    Run here in ONNX Runtime, it is as close to torch's half head as TensorRT's engine must be, and not the
    float graph."""
    import onnx
    import onnxruntime as ort

    from facesplit.runtimes.graphs import cached_graph, float16_graph

    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE)
    path, _ = cached_graph(detector, "head", "tensorrt", graphs)
    half = float16_graph(path)
    assert float16_graph(path) == half and half != path  # written once, beside the float graph
    model = onnx.load(str(half))
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT16}
    ends = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in ends} == {onnx.TensorProto.FLOAT}
    inputs = np.concatenate([np.ascontiguousarray(preprocess(p, SIZE)[0].numpy()) for p in photos])
    graph = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"input": inputs})[0]
    reference = head_runtime("torch", detector, precision="float16").run(inputs)
    difference = np.abs(graph - reference)
    assert float(difference.max()) <= MAX_ACROSS and float(difference.mean()) <= MEAN_ACROSS, \
        f"max {difference.max():.3g}, mean {difference.mean():.3g}"
    exact = head_runtime("torch", detector).run(inputs)
    assert float(np.abs(graph - exact).max()) > 0  # computed in half precision, not the float graph


@pytest.mark.skipif(bool(missing("tensorrt")), reason="TensorRT is not installed (NVIDIA GPUs only; it cannot be "
                    "installed on these CPU machines): pip install 'frosted[tensorrt]'")
@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_tensorrt_heads_at_other_precisions(faceboxes, photos, graphs, calibration,
                                            precision):  # pragma: no cover - needs a GPU
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: TensorRT needs an NVIDIA GPU")
    if precision == "int8" and missing("nncf"):
        pytest.skip("NNCF is not installed: the int8 graph is quantized by it (pip install 'frosted[tensorrt]')")
    detector = SplitDetector(faceboxes.at_split("inception3"), SIZE, PostprocessConfig(score_threshold=0.7))
    inputs = np.concatenate([np.ascontiguousarray(preprocess(p, SIZE)[0].numpy()) for p in photos])
    on_gpu = head_runtime("tensorrt", detector, None, graphs, precision=precision, calibration=calibration)
    if precision == "int8":  # the same signed graph on the CPU, in ONNX Runtime (which NNCF needs anyway)
        import onnxruntime as ort

        from facesplit.runtimes.int8 import int8_graph, signed_graph

        path, _ = int8_graph(detector, calibration, graphs, "tensorrt")
        session = ort.InferenceSession(str(signed_graph(path)), providers=["CPUExecutionProvider"])
        reference = session.run(None, {"input": inputs})[0]
    else:  # torch's half-precision copy of the head
        reference = head_runtime("torch", detector, precision="float16").run(inputs)
    difference = np.abs(on_gpu.run(inputs) - reference)
    assert float(difference.max()) <= MAX_ACROSS and float(difference.mean()) <= MEAN_ACROSS, \
        f"max {difference.max():.3g}, mean {difference.mean():.3g}"
    exact = detector_on("torch", detector)
    found = detector_on("tensorrt", detector, None, graphs, precision=precision, calibration=calibration)
    for photo in photos:
        want, got = exact.detect(photo), found.detect(photo)
        assert len(want) >= 1 and len(got) == len(want)
        assert float(iou_matrix(want[:, :4], got[:, :4]).max(axis=1).min()) >= MIN_IOU



@pytest.mark.slow  # a tail and an agent in their own processes; int8: the agent exports and quantizes its head (~40 s)
@pytest.mark.parametrize("precision", [pytest.param("int8", marks=needs_int8), "float16"])
def test_an_agent_at_another_precision_and_a_tail_that_serves_it(tmp_path, weights_path, calibration, monkeypatch,
                                                                precision):
    monkeypatch.setenv("FROSTED_GRAPH_CACHE", str(tmp_path / "graphs"))
    monkeypatch.setenv("FROSTED_WEIGHTS", str(weights_path))
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10)
    port = free_port()
    profile = validated_copy(tmp_path, PROFILE, precision)
    tail, lines = start_tail_process(port, "--insecure", "--noise", str(profile), "--threads", "1",
                                     "--serve-precision", precision)
    try:
        assert any(f"serving {PROFILE}+{precision}-head" in line for line in lines), lines
        runtime = "openvino" if precision == "int8" else "torch"
        config = tmp_path / "cameras.yaml"
        frames = f", calibration: '{calibration}'" if precision == "int8" else ""
        config.write_text(f"tail: {{address: '127.0.0.1:{port}', insecure: true}}\nnoise: {{profile: {PROFILE}}}\n"
                          f"cameras: [{{id: door, url: '{clip}'}}]\n"
                          f"model: {{runtime: {runtime}, threads: 1{frames}}}\n")
        out = tmp_path / "frames.jsonl"
        result = run_frosted("edge", "--config", str(config), "--json", str(out), "--precision", precision)
        assert result.returncode == 0, result.stderr[-2000:]
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) >= 5 and all(len(r["boxes"]) == 1 for r in records)
        assert len(list((tmp_path / "graphs").glob("head-int8-*.onnx"))) == (precision == "int8")
    finally:
        tail.terminate()
        tail.wait(timeout=30)


def test_calibration_frames_are_the_folders_regular_files(tmp_path) -> None:
    """A FIFO or a folder named like a photo is no frame (reading a FIFO would wait for a writer for ever)."""
    import os

    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")
    assert calibration_frames(tmp_path) == [tmp_path / "a.jpg"]
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(CalibrationError, match="no images"):
        calibration_frames(tmp_path)
