"""The tail on NVIDIA Triton: `frosted export triton` writes a model repository, a REAL tritonserver (from
nvidia-pytriton, python backend, on 127.0.0.1) serves it, and the edge agent's KServe v2 transport
(``triton://HOST:PORT``) streams to it: the boxes our tail sends, batches across streams, the fingerprint
refusal in one line, and a Triton restart survived. One server for the module (it starts in ~5-10 s)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import cv2
import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import json_format, text_format

from edge_agent import metrics
from edge_agent.agent import EdgeAgent, triton_model_for
from edge_agent.backend import RuntimeHeadBackend, TorchHeadBackend
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from edge_agent.tail_check import TailUnusableError
from edge_agent.triton_uplink import TritonTransport, detections, infer_request
from edge_agent.uplink import CameraStream, open_channel
from facesplit.detector import SplitDetector
from facesplit.images import sample_image
from facesplit.noise.shipped import load_profile_for
from facesplit.postprocess import PostprocessConfig, detections_from_outputs
from facesplit.preprocess import preprocess
from facesplit.runtimes import fingerprint_at
from facesplit.runtimes.factory import head_runtime
from facesplit.weights import clean_fingerprint
from frosted.demo import make_clip
from tests.conftest import invoke_frosted
from tests.rig.servers import RigUnavailableError, RtspServer
from tests.rig.triton import TritonServer, triton_install
from tests.tail_helpers import PROFILE, frame, validated_copy
from tests.waiting import wait_until
from triton_wire import grpc_service_pb2_grpc as kserve_grpc
from triton_wire import model_config_pb2 as mc
from triton_wire.names import ensemble_name

pytestmark = pytest.mark.slow  # a tritonserver in its own process, agents streaming to it

CLEAN = "clean-rdcl"  # the clean tail's ensemble at the service detector's split (PROFILE's too)
HALF = f"{PROFILE}+float16-head"  # PROFILE's tail, served to agents whose head runs in float16
PARTS = ("", ".tail-onnx", ".tail-python", ".boxes")


@pytest.fixture(scope="module")
def repository(tmp_path_factory, weights_path) -> Path:
    """The repository as a user makes it: the CLI, the profile and the clean tail, the tests' threshold."""
    out = tmp_path_factory.mktemp("triton") / "models"
    profile = validated_copy(tmp_path_factory.mktemp("profile"), PROFILE, "float16")
    result = invoke_frosted("export", "triton", "--noise", str(profile), "--serve-clean", "--threshold", "0.5",
                            "--threads", "1", "--weights", str(weights_path), "--out", str(out),
                            "--serve-precision", "float16")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("wrote ") == 4, result.stderr  # the profile and clean, for float32 and float16 heads
    return out


@pytest.fixture(scope="module")
def triton(repository) -> TritonServer:
    # the python-backend models only: this server has no onnxruntime backend (the .tail-onnx models are for
    # NVIDIA's Triton images); loading an ensemble loads the models it calls
    try:
        server = TritonServer(repository, models=[PROFILE, CLEAN, HALF])
    except RigUnavailableError as exc:
        pytest.skip(str(exc))
    with server:
        yield server


def config_of(repository: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((repository / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_every_model_is_batched_warmed_up_and_carries_its_fingerprint(repository, tails):
    for tail in tails.values():
        name = tail.name if tail.noisy else CLEAN
        ensemble, onnx_tail, python_tail, boxes = (config_of(repository, name + part) for part in PARTS)
        assert ensemble.platform == "ensemble" and onnx_tail.platform == "onnxruntime_onnx"
        assert python_tail.backend == boxes.backend == "python"
        assert [step.model_name for step in ensemble.ensemble_scheduling.step] == [name + ".tail-python",
                                                                                   name + ".boxes"]
        for config in (ensemble, onnx_tail, python_tail, boxes):
            assert config.parameters["fingerprint"].string_value == tail.fingerprint
            assert config.max_batch_size == 8
        for config in (onnx_tail, python_tail, boxes):
            assert config.HasField("dynamic_batching") and config.model_warmup


def test_heads_at_another_precision_get_models_of_their_own(repository, tails):
    for tail in tails.values():
        name = ensemble_name(tail.name if tail.noisy else None, tail.split, "float16")
        assert name == (HALF if tail.noisy else f"{CLEAN}+float16-head")
        for part in PARTS:
            config = config_of(repository, name + part)
            assert config.parameters["fingerprint"].string_value == fingerprint_at(tail.fingerprint, "float16")
            assert config.parameters["head_precision"].string_value == "float16"
        assert config_of(repository, name.removesuffix("+float16-head")).parameters["head_precision"].string_value \
            == "float32"


def test_the_export_replaces_its_own_models_and_refuses_anyone_elses(tmp_path, weights_path):
    out = tmp_path / "models"
    (out / f"{PROFILE}.boxes").mkdir(parents=True)
    (out / f"{PROFILE}.boxes" / "config.pbtxt").write_text('name: "someone else\'s"\n')
    result = invoke_frosted("export", "triton", "--noise", PROFILE, "--weights", str(weights_path), "--out", str(out))
    assert result.returncode == 1 and result.stderr.strip() == (
        f"Error: {out / PROFILE}.boxes exists and is not a model frosted export triton wrote: not replacing it "
        "(remove it, or choose another --out)"), result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [f"{PROFILE}.boxes"]  # nothing written before the refusal


def test_the_onnx_tail_takes_the_wire_fp16_and_computes_our_tail(repository, tails, noisy):
    activation, fingerprint = noisy
    wire = activation.astype(np.float16)[None]
    session = ort.InferenceSession(str(repository / f"{PROFILE}.tail-onnx" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    loc, scores = session.run(["loc", "scores"], {"activation": wire})
    ours_loc, ours_scores = tails[fingerprint].boxes.runtime.run(wire.astype(np.float32))
    assert np.abs(loc - ours_loc).max() < 1e-3 and np.abs(scores - ours_scores).max() < 1e-4


def test_the_boxes_model_is_our_post_processing_to_the_last_bit(repository, tails, noisy, monkeypatch):
    """The boxes model's numpy decoding and NMS against facesplit's (OpenCV's NMSBoxes), at a score threshold
    that sends hundreds of overlapping candidates through the NMS: equal, bit for bit."""
    try:
        backend = triton_install() / "backends" / "python"
    except RigUnavailableError as exc:
        pytest.skip(str(exc))
    monkeypatch.syspath_prepend(str(backend))  # Triton's triton_python_backend_utils, which model.py imports
    folder = repository / f"{PROFILE}.boxes"
    spec = importlib.util.spec_from_file_location("frosted_boxes_model", folder / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(config_of(repository, folder.name), preserving_proto_field_name=True)
    config["parameters"]["score_threshold"]["string_value"] = "0.01"
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(folder), "model_version": "1"})
    activation, fingerprint = noisy
    loc, scores = tails[fingerprint].boxes.runtime.run(activation[None])
    ours = detections_from_outputs(loc[0], scores[0], 1024, 1024, PostprocessConfig(score_threshold=0.01))
    theirs = model.detections(loc[0], scores[0])
    assert len(ours) > 100 and np.array_equal(theirs, ours)


def triton_boxes(triton: TritonServer, model: str, activation: np.ndarray) -> np.ndarray:
    with grpc.insecure_channel(triton.grpc_address) as channel:
        stub = kserve_grpc.GRPCInferenceServiceStub(channel)
        answer = detections(stub.ModelInfer(infer_request(model, frame(activation, "", 3)), timeout=60))
    assert answer.sequence == 3
    return np.array([[b.x1, b.y1, b.x2, b.y2, b.score] for b in answer.boxes], np.float32).reshape(-1, 5)


def test_triton_answers_the_boxes_our_tail_sends(triton, tails, noisy, service_detector, shared_dir):
    """On the same activations (the wire's FP16): the noisy astronaut, and the clean activation of a team
    photo (many faces: the NMS is Triton's numpy one against our OpenCV one)."""
    activation, fingerprint = noisy
    team, _ = preprocess(cv2.imread(str(shared_dir / "data/faces/mitcmu/images/Brazil.jpg")),
                         service_detector.input_size)
    with torch.inference_mode():
        clean = service_detector.head(team)[0].contiguous().numpy()
    counts: list[int] = []
    cases = [(PROFILE, tails[fingerprint], activation),
             (CLEAN, tails[clean_fingerprint(service_detector.source)], clean)]
    for model, tail, sent in cases:
        wire = sent.astype(np.float16)
        ours = tail.detect_batch(wire.astype(np.float32)[None])[0]
        theirs = triton_boxes(triton, model, wire)
        assert theirs.shape == ours.shape, (model, theirs, ours)
        np.testing.assert_allclose(theirs, ours, atol=0.05)  # pixels; the graphs agree to ~1e-5
        counts.append(len(ours))
    assert counts[0] == 1 and counts[1] >= 5, counts  # the astronaut's face; the team's


def agent_for(detector: SplitDetector, address: str, url: str, out: Path, camera: str = "door", **tail: object
              ) -> EdgeAgent:
    config = AgentConfig(tail={"address": address, "insecure": True, **tail}, cameras=[{"id": camera, "url": url}],
                         noise={"profile": PROFILE}, output=str(out), sources={"open_seconds": 5, "read_seconds": 2})
    profile = load_profile_for(detector, PROFILE)
    return EdgeAgent(config, TorchHeadBackend(detector, profile, clean_fingerprint(detector.source)),
                     JsonLinesSink(str(out)))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


async def test_the_agent_through_triton_finds_what_the_local_detector_finds(triton, service_detector, tmp_path):
    import av

    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10)
    out = tmp_path / "boxes.jsonl"
    agent = agent_for(service_detector, f"triton://{triton.grpc_address}", str(clip), out)  # the profile's model
    summary = await agent.run()
    agent.sink.close()
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == summary.answered["door"] >= 3
    for record in records:
        expected = service_detector.detect(frames[record["frame_index"]])
        assert len(record["boxes"]) == len(expected) == 1, record["boxes"]
        assert iou(np.array(record["boxes"][0]), expected[0]) > 0.7
        # Triton sends no tail timings: none are made up
        assert "uplink_round_trip" in record["latency_ms"] and "tail_queue" not in record["latency_ms"]


async def test_a_float16_agent_through_triton_gets_the_float16_heads_model(triton, service_detector, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=10)
    out = tmp_path / "boxes.jsonl"
    config = AgentConfig(tail={"address": f"triton://{triton.grpc_address}", "insecure": True},
                         cameras=[{"id": "door", "url": str(clip)}], noise={"profile": PROFILE}, output=str(out),
                         model={"precision": "float16"}, sources={"open_seconds": 5, "read_seconds": 2})
    assert triton_model_for(config) == HALF
    backend = RuntimeHeadBackend(head_runtime("torch", service_detector, precision="float16"),
                                 service_detector.input_size, load_profile_for(service_detector, PROFILE),
                                 clean_fingerprint(service_detector.source), precision="float16")
    agent = EdgeAgent(config, backend, JsonLinesSink(str(out)))
    summary = await agent.run()
    agent.sink.close()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == summary.answered["door"] >= 3
    assert all(len(record["boxes"]) == 1 for record in records)


async def test_batches_form_under_four_streams(triton, noisy):
    activation, fingerprint = noisy
    model = f"{PROFILE}.tail-python"
    before = await asyncio.to_thread(triton.batch_sizes, model)
    transport = TritonTransport(open_channel(triton.grpc_address, None), "triton", PROFILE)
    answers: list[int] = []
    streams = [CameraStream(transport, f"cam{i}", lambda _, answer, __: answers.append(len(answer.boxes)),
                            window=2, deadline=30) for i in range(4)]
    runs = [asyncio.create_task(stream.run()) for stream in streams]

    async def send_forever(stream: CameraStream) -> None:
        sequence = 0
        while True:
            if await stream.wait_for_room():
                await stream.send(frame(activation, fingerprint, sequence), None)
                sequence += 1

    senders = [asyncio.create_task(send_forever(stream)) for stream in streams]
    batched: dict[int, int] = {}

    async def batches_over_one() -> bool:
        batched.update(await asyncio.to_thread(triton.batch_sizes, model))
        return any(size > 1 and count > before.get(size, 0) for size, count in batched.items())

    try:
        deadline = asyncio.get_running_loop().time() + 120
        while not await batches_over_one():
            assert asyncio.get_running_loop().time() < deadline, f"no batch over 1 formed: {batched}"
            await asyncio.sleep(0.2)
    finally:
        for task in (*senders, *runs):
            task.cancel()
        await asyncio.gather(*senders, *runs, return_exceptions=True)
        await transport.close()
    print(f"batch sizes seen: {batched}")
    assert answers and set(answers) == {1}  # every answer is the astronaut's one face


@pytest.mark.parametrize("model, says", [
    (f"/{PROFILE}", f"it serves: {PROFILE} (fingerprint "),  # the model exists, its fingerprint is another's
    ("", f"it serves: {PROFILE}, {HALF}, {CLEAN}"),  # no model named after the agent's profile
])
def test_a_profile_triton_does_not_serve_is_refused_in_one_line(triton, weights_path, tmp_path, model, says):
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=10)
    address = f"triton://{triton.grpc_address}{model}"
    result = invoke_frosted("edge", "--source", str(clip), "--tail", address, "--insecure", "--noise", "alpha-0.4",
                            "--weights", str(weights_path))
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert errors[0].startswith(f"Error: tail {address} does not serve this agent's profile (fingerprint ")
    assert says in errors[0], errors[0]


@pytest.mark.parametrize("client", ["mutual TLS", "no client certificate"])
async def test_tls_to_triton_is_the_tls_of_our_tail(repository, service_detector, certs, tmp_path, client):
    """tail.tls as today: the agent checks Triton's certificate and shows its own; a Triton that wants a client
    certificate the agent lacks refuses it, and the agent says so in one line, as with our tail."""
    try:
        server = TritonServer(repository, models=[PROFILE], tls=(certs.server_cert, certs.server_key, certs.ca))
    except RigUnavailableError as exc:
        pytest.skip(str(exc))
    tls = {"ca": certs.ca, **({"cert": certs.client_cert, "key": certs.client_key} if client == "mutual TLS" else {})}
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=10)
    await asyncio.to_thread(server.start)
    try:
        config = AgentConfig(tail={"address": f"triton://{server.grpc_address}", "tls": tls},
                             cameras=[{"id": "tls", "url": str(clip)}], noise={"profile": PROFILE},
                             output=str(tmp_path / "out.jsonl"))
        profile = load_profile_for(service_detector, PROFILE)
        agent = EdgeAgent(config, TorchHeadBackend(service_detector, profile,
                                                   clean_fingerprint(service_detector.source)),
                          JsonLinesSink(config.output))
        try:
            if client == "mutual TLS":
                assert (await agent.run()).answered["tls"] >= 2
            else:
                with pytest.raises(TailUnusableError, match="closed the connection during the TLS handshake"):
                    await agent.run()
        finally:
            agent.sink.close()
    finally:
        await asyncio.to_thread(server.close)


def reconnects(camera: str) -> float:
    return metrics.REGISTRY.get_sample_value("frosted_edge_reconnects_total", {"camera": camera, "link": "uplink"}
                                             ) or 0.0


async def test_the_agent_survives_a_triton_restart(triton, service_detector, gst_rtsp, tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), sample_image("astronaut"))
    with RtspServer(photo, 640, 480, fps=10) as camera:
        agent = agent_for(service_detector, f"triton://{triton.grpc_address}", camera.url, tmp_path / "out.jsonl",
                          camera="triton-cam", deadline_seconds=1.5)
        task = asyncio.create_task(agent.run())
        try:
            answered = lambda: agent.pipelines[0].answered if agent.pipelines else 0  # noqa: E731
            await wait_until(lambda: answered() >= 5, "first answers through Triton", 120)
            retries = reconnects("triton-cam")
            await asyncio.to_thread(triton.kill)
            await wait_until(lambda: reconnects("triton-cam") > retries and agent.pipelines[0].stream.in_flight == 0,
                             "the uplink to notice Triton is gone")
            stalled_at = answered()
            await asyncio.to_thread(triton.start)
            await wait_until(lambda: answered() > stalled_at + 3, "answers after Triton's return", 120)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            agent.sink.close()
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(any(box[4] >= 0.7 for box in record["boxes"]) for record in records)
