"""The runtime seam: the agent's and the tail's logic on a fake runtime (fast, no model), the one-line errors,
and every exported graph against torch on real photos, at each split and both input sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cloud_tail.models import ServedTail
from edge_agent.agent import EdgeAgent
from edge_agent.backend import RuntimeHeadBackend
from edge_agent.config import AgentConfig, ConfigError, load_agent_config
from edge_agent.sink import JsonLinesSink
from facesplit.detector import SplitDetector, at_split, with_tail
from facesplit.evaluation.ap import iou_matrix
from facesplit.faceboxes import SPLITS, FaceBoxes, activation_shape
from facesplit.images import read_image_bgr, sample_image
from facesplit.noise.profile import NoiseProfile, Obfuscator
from facesplit.noise.sampler import GaussianStream
from facesplit.noise.shipped import load_profile_for
from facesplit.pipeline import EdgeHead, TailBoxes, add_noise, noise_device
from facesplit.postprocess import PostprocessConfig
from facesplit.preprocess import InputSize, preprocess
from facesplit.runtimes import (
    DeviceHeadRuntime,
    RuntimeUnavailableError,
    UnknownRuntimeError,
    check_device,
    check_precision,
    check_runtime_name,
    fingerprint_at,
    require,
)
from facesplit.runtimes.factory import detector_on, head_runtime, tail_runtime
from facesplit.runtimes.graphs import MAX_BATCH, GraphSpec
from facesplit.runtimes.onnxruntime_runtime import providers_for
from frosted.demo import make_clip
from frosted_wire.codec import decode_tensor
from tests.conftest import run_frosted
from tests.rig.servers import free_port
from tests.runtime_fakes import FACE_SCORE, FakeHead, FakeTail, square_clip, square_frame
from tests.runtime_params import NO_CUDA, missing, runtime_param
from tests.tail_helpers import PROFILE, running_tail, start_tail_process

SMALL = InputSize(320, 192)  # a 320x180 frame fits at scale 1, padded at the bottom
SMALL_SHAPE = activation_shape(192, 320)
TOLERANCE = 1e-4  # max abs difference from torch, of activations (max ~5 on photos), box offsets and scores
PHOTOS = ("data/faces/dlib/images/2008_001322.jpg",)


def small_profile(mu: float = 0.5, sigma: float = 0.01) -> NoiseProfile:
    return NoiseProfile(mu=torch.full(SMALL_SHAPE, mu), sigma=torch.full(SMALL_SHAPE, sigma), alpha=0.5,
                        input_size=(320, 192), head_fingerprint="fake-head")


def cell_centre(x: int, y: int) -> tuple[float, float]:
    """The centre of the stride-32 cell holding pixel (x, y) of the model input."""
    return (x // 32 + 0.5) * 32, (y // 32 + 0.5) * 32


# ----------------------------------------------------------------------------- fake runtimes: fast, no model

def test_the_edge_head_adds_noise_around_the_runtime_not_inside_it():
    runtime = FakeHead()
    head = EdgeHead(runtime, SMALL, Obfuscator(small_profile(), GaussianStream(seed_for_reproducible_evaluation=1)))
    frame = square_frame(320, 180, (100, 60))
    found = head(frame)
    expected_input, _ = preprocess(frame, SMALL)
    assert len(runtime.inputs) == 1 and runtime.inputs[0].dtype == np.float32
    assert np.array_equal(runtime.inputs[0], expected_input.numpy())  # the runtime sees the model input as is
    clean = FakeHead().run(expected_input.numpy())
    added = found.activations - clean
    assert found.activations.shape == (1, *SMALL_SHAPE)
    assert abs(float(added.mean()) - 0.5) < 0.01 and 0.005 < float(added.std()) < 0.02  # mu + sigma * eps
    assert set(found.stage_seconds) == {"preprocess", "head", "noise"}
    assert (found.letterbox.scale, found.letterbox.input_height) == (1.0, 192)


def test_one_seed_gives_the_same_noise_whatever_the_runtimes_memory_layout():
    """torch's head returns channels_last memory, the graph runtimes dense NCHW: the noise must not care, so an
    evaluation seed means the same noise on every runtime."""
    activations = np.random.default_rng(0).random((2, *SMALL_SHAPE), dtype=np.float32)
    channels_last = np.ascontiguousarray(activations.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    noisy = [add_noise(Obfuscator(small_profile(), GaussianStream(seed_for_reproducible_evaluation=5)), a)
             for a in (activations, channels_last)]
    assert np.array_equal(noisy[0], noisy[1]) and not np.array_equal(noisy[0], activations)


def test_the_backend_sends_what_the_runtime_returned():
    backend = RuntimeHeadBackend(FakeHead(), SMALL, None, "clean-fake", "float32")
    frame = square_frame(320, 180, (200, 100))
    encoded = backend.encode(frame)
    sent = decode_tensor(encoded.tensor, SMALL_SHAPE)
    assert np.array_equal(sent, FakeHead().run(preprocess(frame, SMALL)[0].numpy())[0])
    assert backend.fingerprint == "clean-fake" and not backend.noisy
    assert set(encoded.stage_seconds) == {"preprocess", "head", "noise", "encode"}


def test_tail_boxes_come_back_per_item_of_a_batch():
    runtime = FakeTail()
    boxes = TailBoxes(runtime, PostprocessConfig(score_threshold=0.5))
    centres = [(40, 40), (200, 100), (300, 170)]
    batch = np.concatenate([FakeHead().run(preprocess(square_frame(320, 180, c), SMALL)[0].numpy())
                            for c in centres])
    found = boxes(batch, 320, 192)
    assert runtime.batches == [3] and len(found) == 3
    for (x, y), item in zip(centres, found, strict=True):
        assert item.shape == (1, 5) and item[0, 4] == pytest.approx(FACE_SCORE)
        cx, cy = cell_centre(x, y)
        assert np.allclose(item[0, :4], [cx - 64, cy - 64, cx + 64, cy + 64], atol=1e-3)


async def test_agent_and_tail_over_loopback_on_fake_runtimes(tmp_path):
    """The whole live path, gRPC and all, with the model swapped for the fake: what the agent and tail do
    around the runtimes (noise, wire, fingerprints, batching, boxes back in the frame's pixels)."""
    centres = [(32 * (1 + i) + 16, 32 * (1 + i % 3) + 16) for i in range(8)]  # each inside one cell
    clip = square_clip(tmp_path / "square.mp4", centres)
    profile = small_profile()
    tail = FakeTail()
    served = ServedTail(profile.fingerprint, "fake-profile", 0.5, True, 320, 192, SMALL_SHAPE, "rdcl",
                        TailBoxes(tail, PostprocessConfig(score_threshold=0.5)))
    out = tmp_path / "boxes.jsonl"
    async with running_tail({profile.fingerprint: served}) as server:
        config = AgentConfig(tail={"address": f"127.0.0.1:{server.port}", "insecure": True},
                             cameras=[{"id": "door", "url": str(clip)}], output=str(out))
        sink = JsonLinesSink(str(out))
        summary = await EdgeAgent(config, RuntimeHeadBackend(FakeHead(), SMALL, profile, "unused"), sink).run()
        sink.close()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == summary.answered["door"] >= 4 and sum(tail.batches) == len(records)
    for record in records:
        (box,) = record["boxes"]
        cx, cy = cell_centre(*centres[record["frame_index"]])
        assert np.allclose(box[:4], [max(cx - 64, 0), max(cy - 64, 0), min(cx + 64, 320), min(cy + 64, 180)],
                           atol=0.5)  # the anchor box, clipped to the 320x180 frame


# ----------------------------------------------------------------------------- names and one-line errors

def test_an_unknown_runtime_is_refused_with_the_names():
    with pytest.raises(UnknownRuntimeError, match="torch, onnxruntime, openvino, tensorrt, not 'tflite'"):
        check_runtime_name("tflite")
    with pytest.raises(ConfigError, match=r"^model\.runtime: runtime must be one of .*'tflite'$"):
        load_agent_config(None, {"tail": {"address": "h:1"}, "cameras": [{"id": "a", "url": "x"}],
                                 "model": {"runtime": "tflite"}})


def test_a_missing_library_names_the_extra_that_installs_it():
    with pytest.raises(RuntimeUnavailableError) as error:
        require("frosted_no_such_library", "--runtime onnxruntime", "onnx", "ONNX Runtime")
    assert str(error.value) == ("--runtime onnxruntime needs ONNX Runtime, which is not installed: "
                                "pip install 'frosted[onnx]'")


@pytest.mark.skipif(not missing("tensorrt"), reason="TensorRT is installed here: nothing is missing")
def test_tensorrt_without_tensorrt_is_one_line():
    with pytest.raises(RuntimeUnavailableError, match=r"^--runtime tensorrt needs TensorRT.*'frosted\[tensorrt\]'$"):
        head_runtime("tensorrt", SplitDetector(FaceBoxes().eval()))


def test_the_cli_says_which_extra_in_one_line(weights_path):
    result = run_frosted("detect", "--sample", "astronaut", "--runtime", "tensorrt", "--weights", str(weights_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --runtime tensorrt needs") and "frosted[" in lines[0]


@pytest.mark.slow  # a tail and two agents in their own processes, each exporting its graphs first (~40 s)
@pytest.mark.skipif(bool(missing("onnxruntime") + missing("openvino")), reason="needs 'frosted[onnx]' and "
                    "'frosted[openvino]'")
def test_the_edge_and_tail_verbs_on_other_runtimes(tmp_path, weights_path, monkeypatch):
    monkeypatch.setenv("FROSTED_GRAPH_CACHE", str(tmp_path / "graphs"))
    monkeypatch.setenv("FROSTED_WEIGHTS", str(weights_path))
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10)
    port = free_port()
    tail, lines = start_tail_process(port, "--insecure", "--noise", PROFILE, "--runtime", "onnxruntime",
                                     "--threads", "1")
    try:
        assert any(f"serving {PROFILE}" in line and "runtime onnxruntime" in line for line in lines), lines
        config = tmp_path / "cameras.yaml"
        config.write_text(f"tail: {{address: '127.0.0.1:{port}', insecure: true}}\nnoise: {{profile: {PROFILE}}}\n"
                          f"cameras: [{{id: door, url: '{clip}'}}]\nmodel: {{runtime: openvino, threads: 1}}\n")
        for flags, name in (([], "openvino"), (["--runtime", "onnxruntime"], "onnxruntime")):  # the flag wins
            out = tmp_path / f"{name}.jsonl"
            result = run_frosted("edge", "--config", str(config), "--json", str(out), *flags)
            assert result.returncode == 0, result.stderr[-2000:]
            records = [json.loads(line) for line in out.read_text().splitlines()]
            assert len(records) >= 5 and all(len(r["boxes"]) == 1 for r in records), name
        assert sorted(p.name.split("-")[0] for p in (tmp_path / "graphs").glob("*.onnx")) == ["head", "tail"]
    finally:
        tail.terminate()
        tail.wait(timeout=30)


# ----------------------------------------------------------------------------- parity with torch, real photos

@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The module's own graph folder: every graph is exported fresh, once, by the code under test."""
    return tmp_path_factory.mktemp("graphs")


@pytest.fixture(scope="module")
def photos(shared_dir) -> list[np.ndarray]:
    return [sample_image("astronaut"), *(read_image_bgr(shared_dir / p) for p in PHOTOS)]


def model_inputs(photos: list[np.ndarray], size: InputSize) -> np.ndarray:
    """The photos' model inputs as one dense NCHW batch."""
    return np.concatenate([np.ascontiguousarray(preprocess(p, size)[0].numpy()) for p in photos])


def parity_cases() -> list[object]:
    cases = []
    for runtime in ("onnxruntime", "openvino"):
        for split in SPLITS:
            for size in ("1024x576", "1024"):
                quick = split == "inception3" and size == "1024x576"  # the default profile's head, 16:9
                param = runtime_param(runtime, slow=not quick)
                cases.append(pytest.param(param.values[0], split, size, marks=param.marks,
                                          id=f"{runtime}-{split}-{size}"))
    return cases


@pytest.mark.parametrize("runtime, split, size", parity_cases())
def test_exported_head_and_tail_match_torch(faceboxes, photos, graphs, runtime, split, size):
    detector = SplitDetector(faceboxes.at_split(split), InputSize.parse(size))
    inputs = model_inputs(photos, detector.input_size)
    torch_head, other_head = head_runtime("torch", detector), head_runtime(runtime, detector, 1, graphs)
    activations = torch_head.run(inputs)
    head_diff = float(np.abs(other_head.run(inputs) - activations).max())
    assert head_diff <= TOLERANCE, f"head: {head_diff:.2e}"
    assert float(activations.max()) > 1.0  # real photos: the tolerance is small against the activations' scale
    loc, scores = tail_runtime("torch", detector).run(activations)
    other_loc, other_scores = tail_runtime(runtime, detector, 1, graphs).run(activations)
    assert other_loc.shape == loc.shape and other_scores.shape == scores.shape == loc.shape[:2]
    assert float(np.abs(other_loc - loc).max()) <= TOLERANCE
    assert float(np.abs(other_scores - scores).max()) <= TOLERANCE
    single = other_head.run(inputs[:1])  # the batch is dynamic: 1 as well as len(photos)
    assert float(np.abs(single - activations[:1]).max()) <= TOLERANCE


@pytest.mark.slow  # two noise-aware tails exported per runtime
@pytest.mark.parametrize("runtime", [runtime_param("onnxruntime"), runtime_param("openvino")])
@pytest.mark.parametrize("profile_name", ["alpha-0.2", "inception3-alpha-0.4"])
def test_a_profiles_noise_aware_tail_matches_torch(faceboxes, photos, graphs, runtime, profile_name):
    base = SplitDetector(faceboxes)
    profile = load_profile_for(at_split(base, "inception3" if "inception3" in profile_name else "rdcl"),
                               profile_name)
    detector = with_tail(at_split(base, profile.split), profile.tail_state)
    assert detector is not base and profile.tail_state is not None
    noise = Obfuscator(profile, GaussianStream(seed_for_reproducible_evaluation=0))
    activations = noise(torch.from_numpy(head_runtime("torch", detector).run(
        model_inputs(photos, detector.input_size)))).contiguous().numpy()
    loc, scores = tail_runtime("torch", detector).run(activations)
    other_loc, other_scores = tail_runtime(runtime, detector, 1, graphs).run(activations)
    assert float(np.abs(other_loc - loc).max()) <= TOLERANCE
    assert float(np.abs(other_scores - scores).max()) <= TOLERANCE


@pytest.mark.skipif(bool(missing("tensorrt")), reason="TensorRT is not installed (NVIDIA GPUs only; it cannot be "
                    "installed on these CPU machines): pip install 'frosted[tensorrt]'")
def test_tensorrt_head_and_tail_match_torch(faceboxes, photos, graphs):  # pragma: no cover - needs a GPU
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: TensorRT needs an NVIDIA GPU")
    detector = SplitDetector(faceboxes.at_split("inception3"), InputSize(1024, 576))
    inputs = model_inputs(photos, detector.input_size)
    activations = head_runtime("torch", detector).run(inputs)
    assert float(np.abs(head_runtime("tensorrt", detector, None, graphs).run(inputs) - activations).max()) <= 1e-3
    loc, scores = tail_runtime("torch", detector).run(activations)
    other_loc, other_scores = tail_runtime("tensorrt", detector, None, graphs).run(activations)
    assert float(np.abs(other_loc - loc).max()) <= 1e-2  # TF32 convolutions on Ampere and later
    assert float(np.abs(other_scores - scores).max()) <= 1e-3


# ----------------------------------------------------------------------------- --device cuda (skipped without a GPU)

def test_a_device_or_precision_the_runtime_cannot_run_is_refused():
    assert check_device("cuda", "torch") == "cuda" and check_device("cpu", "openvino") == "cpu"
    with pytest.raises(UnknownRuntimeError, match=r"^--device cuda runs on --runtime torch, onnxruntime, tensorrt, "
                                                  r"not openvino$"):
        check_device("cuda", "openvino")
    assert check_precision("float16", "torch", "cuda") == check_precision("float16", "torch", "cpu") == "float16"
    with pytest.raises(UnknownRuntimeError,
                       match=r"^--precision float16 runs on --runtime torch or tensorrt, not openvino$"):
        check_precision("float16", "openvino", "cpu")
    cameras = {"tail": {"address": "h:1"}, "cameras": [{"id": "a", "url": "x"}]}
    assert load_agent_config(None, cameras).model.device == "cpu"
    with pytest.raises(ConfigError, match=r"^model: --device cuda runs on .*not openvino$"):
        load_agent_config(None, {**cameras, "model": {"device": "cuda", "runtime": "openvino"}})
    with pytest.raises(ConfigError, match=r"^model: device must be one of cpu, cuda, not 'gpu'$"):
        load_agent_config(None, {**cameras, "model": {"device": "gpu"}})
    # half precision is another head: its frames say so
    assert fingerprint_at("abc", "float16") not in ("abc", fingerprint_at("abc", "int8"))


def test_a_batch_past_an_engines_range_runs_in_pieces_in_order():
    from facesplit.runtimes.graphs import in_pieces

    seen: list[int] = []

    def run(values: np.ndarray) -> list[np.ndarray]:  # an engine that takes at most 64 rows
        assert len(values) <= MAX_BATCH
        seen.append(len(values))
        return [values * 2, values.sum(axis=1)]

    values = np.arange(150 * 3, dtype=np.float32).reshape(150, 3)
    doubled, sums = in_pieces(run, values)
    assert seen == [64, 64, 22]
    np.testing.assert_array_equal(doubled, values * 2)
    np.testing.assert_array_equal(sums, values.sum(axis=1))
    seen.clear()
    assert in_pieces(run, values[:8])[0].shape == (8, 3) and seen == [8]


def test_onnxruntime_picks_its_gpu_providers_for_cuda(tmp_path):
    spec = GraphSpec("head", "inception3", 1024, 576, "0" * 64)
    assert providers_for("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], tmp_path, spec) == [
        "CPUExecutionProvider"]
    float32_cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})  # the float32 fingerprint's activations
    assert providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], tmp_path, spec) == [
        float32_cuda, "CPUExecutionProvider"]
    tensorrt_first = providers_for("cuda", ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                            "CPUExecutionProvider"], tmp_path, spec)
    assert tensorrt_first[0] == ("TensorrtExecutionProvider", {
        "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path),
        # one engine for every batch the graph takes, not one built per new batch size
        "trt_profile_min_shapes": "input:1x3x576x1024", "trt_profile_opt_shapes": "input:1x3x576x1024",
        "trt_profile_max_shapes": f"input:{MAX_BATCH}x3x576x1024"})
    assert tensorrt_first[1:] == [float32_cuda, "CPUExecutionProvider"]
    with pytest.raises(RuntimeUnavailableError, match=r"^--device cuda --runtime onnxruntime needs .*onnxruntime-gpu"):
        providers_for("cuda", ["CPUExecutionProvider"], tmp_path, spec)


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_onnxruntime_on_cuda_refuses_to_fall_back_to_the_cpu(detector, graphs, monkeypatch):
    """onnxruntime-gpu without CUDA's or cuDNN's libraries lists its CUDA provider, then starts the session on the
    CPU with a logged error: that is one line and no runtime, not a GPU head silently on the CPU. Here the CPU
    build claims the provider, and its real session falls back as such an install's does."""
    import onnxruntime as ort

    from facesplit.runtimes.graphs import cached_graph
    from facesplit.runtimes.onnxruntime_runtime import OnnxRuntimeTail

    path, spec = cached_graph(detector, "tail", "onnxruntime", graphs)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailableError, match=r"^--device cuda --runtime onnxruntime: ONNX Runtime could "
                                                      r"not start CUDAExecutionProvider \(.*\) and would run on "
                                                      r"the CPU instead$"):
        OnnxRuntimeTail(path, spec, 1, device="cuda")
    assert OnnxRuntimeTail(path, spec, 1).session.get_providers() == ["CPUExecutionProvider"]


def test_the_cpu_backend_draws_aes_noise_and_takes_tensors_too():
    """On the CPU the agent's noise is the AES sampler, as before; `add_noise` takes an activation already in a
    tensor (a GPU head's, here a CPU one) and gives the same numbers as from the array."""
    backend = RuntimeHeadBackend(FakeHead(), SMALL, small_profile(), "unused")
    assert isinstance(backend.head.noise.stream, GaussianStream)
    activations = np.random.default_rng(1).random((1, *SMALL_SHAPE), dtype=np.float32)
    seeded = [Obfuscator(small_profile(), GaussianStream(seed_for_reproducible_evaluation=3)) for _ in range(2)]
    from_array = add_noise(seeded[0], activations)
    from_tensor = add_noise(seeded[1], torch.from_numpy(activations.copy()))
    assert isinstance(from_tensor, np.ndarray) and np.array_equal(from_array, from_tensor)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here: nothing is missing")
def test_device_cuda_without_a_gpu_is_one_line(weights_path, tmp_path):
    result = run_frosted("detect", "--sample", "astronaut", "--device", "cuda", "--weights", str(weights_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --device cuda needs an NVIDIA GPU and a CUDA build of "
                                                   "torch; torch ") and lines[0].endswith("sees no CUDA device"), lines
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2, fps=5)
    result = run_frosted("edge", "--source", str(clip), "--tail", "127.0.0.1:1", "--insecure", "--device", "cuda",
                         "--weights", str(weights_path))
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert result.returncode == 1 and len(errors) == 1 and "--device cuda needs an NVIDIA GPU" in errors[0]


def cuda_parity_cases() -> list[object]:
    return [pytest.param(split, size, id=f"{split}-{size}") for split in SPLITS for size in ("1024x576", "1024")]


@NO_CUDA
@pytest.mark.parametrize("split, size", cuda_parity_cases())
def test_cuda_torch_head_and_tail_match_the_cpu(faceboxes, photos, split, size):  # pragma: no cover - needs a GPU
    detector = SplitDetector(faceboxes.at_split(split), InputSize.parse(size))
    inputs = model_inputs(photos, detector.input_size)
    activations = head_runtime("torch", detector).run(inputs)
    on_gpu = head_runtime("torch", detector, device="cuda")
    assert float(np.abs(on_gpu.run(inputs) - activations).max()) <= TOLERANCE
    assert float(np.abs(on_gpu.run(inputs[:1]) - activations[:1]).max()) <= TOLERANCE
    loc, scores = tail_runtime("torch", detector).run(activations)
    gpu_loc, gpu_scores = tail_runtime("torch", detector, device="cuda").run(activations)
    assert float(np.abs(gpu_loc - loc).max()) <= TOLERANCE and float(np.abs(gpu_scores - scores).max()) <= TOLERANCE


FLOAT16_MAX_ABS, FLOAT16_MEAN_ABS = 0.1, 0.01  # against activations reaching ~5-9: an 11-bit mantissa, 20+ layers
FLOAT16_BOX_IOU = 0.9


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NO_CUDA)])
def test_float16_head_stays_close_and_finds_the_same_faces(faceboxes, photos, device):
    detector = SplitDetector(faceboxes.at_split("inception3"), InputSize(1024, 576),
                             PostprocessConfig(score_threshold=0.7))
    inputs = model_inputs(photos, detector.input_size)
    half_head = head_runtime("torch", detector, precision="float16", device=device)
    difference = np.abs(half_head.run(inputs) - head_runtime("torch", detector).run(inputs))
    assert float(difference.max()) <= FLOAT16_MAX_ABS and float(difference.mean()) <= FLOAT16_MEAN_ABS, \
        f"max {difference.max():.3g}, mean {difference.mean():.3g}"
    assert float(difference.max()) > 0  # it did compute in half precision
    half = detector_on("torch", detector, precision="float16", device=device)
    for photo in photos:
        expected, found = detector.detect(photo), half.detect(photo)
        assert len(found) == len(expected) >= 1
        assert (iou_matrix(expected[:, :4], found[:, :4]).max(axis=1) >= FLOAT16_BOX_IOU).all()


@NO_CUDA
def test_the_cuda_head_draws_its_noise_on_the_device(faceboxes):  # pragma: no cover - needs a GPU
    detector = SplitDetector(faceboxes, SMALL)
    runtime = head_runtime("torch", detector, device="cuda")
    assert isinstance(runtime, DeviceHeadRuntime) and noise_device(runtime).type == "cuda"
    backend = RuntimeHeadBackend(runtime, SMALL, small_profile(), "unused")
    assert backend.head.noise.stream.device.type == "cuda"
    frame = sample_image("astronaut")
    found = backend.head(frame)
    added = found.activations - runtime.run(preprocess(frame, SMALL)[0].numpy())
    assert isinstance(found.activations, np.ndarray) and found.activations.shape == (1, *SMALL_SHAPE)
    assert abs(float(added.mean()) - 0.5) < 0.01 and 0.005 < float(added.std()) < 0.02  # mu + sigma * eps
    assert not np.array_equal(backend.head(frame).activations, found.activations)  # fresh noise, every frame
    assert backend.fingerprint == "unused"
    half = RuntimeHeadBackend(head_runtime("torch", detector, precision="float16", device="cuda"), SMALL,
                              small_profile(), "unused", precision="float16")
    assert half.fingerprint == fingerprint_at("unused", "float16") != "unused"


@pytest.mark.skipif(bool(missing("onnxruntime")), reason="ONNX Runtime is not installed: pip install 'frosted[onnx]'")
def test_onnxruntime_on_cuda_matches_torch(faceboxes, photos, graphs):  # pragma: no cover - needs onnxruntime-gpu
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has no CUDA execution provider: pip install "
                    "onnxruntime-gpu, on a GPU machine")
    detector = SplitDetector(faceboxes.at_split("inception3"), InputSize(1024, 576))
    inputs = model_inputs(photos, detector.input_size)
    activations = head_runtime("torch", detector).run(inputs)
    on_gpu = head_runtime("onnxruntime", detector, None, graphs, device="cuda")
    assert float(np.abs(on_gpu.run(inputs) - activations).max()) <= 1e-3  # its convolutions may use TF32
