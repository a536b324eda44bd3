"""The edge agent end to end: a real clip through head + noise, real gRPC to a real tail, boxes back in the
frame's pixels; the CLI verbs the way a user runs them."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.backend import RuntimeHeadBackend
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from facesplit.detector import SplitDetector
from facesplit.noise.shipped import load_profile_for
from facesplit.postprocess import PostprocessConfig
from facesplit.runtimes.factory import head_runtime
from facesplit.weights import clean_fingerprint
from frosted.demo import make_clip
from tests.conftest import REPO, invoke_frosted, run_frosted
from tests.rig.servers import free_port
from tests.runtime_params import runtime_device_params
from tests.tail_helpers import PROFILE, running_tail, tails_for


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def service_detector(faceboxes) -> SplitDetector:
    return SplitDetector(faceboxes, postprocess=PostprocessConfig(score_threshold=0.5))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "astronaut.mp4", seconds=1.0, fps=15)


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("runtime, device", runtime_device_params(slow_except_torch=True))  # graphs export first
async def test_agent_boxes_match_the_clean_detector_on_each_frame(service_detector, clip, tmp_path, runtime, device):
    """The agent's head and the tail on ``runtime`` and ``device`` (on CUDA the noise is drawn on the GPU),
    against the CPU torch detector frame by frame."""
    out = tmp_path / "boxes.jsonl"
    profile = load_profile_for(service_detector, PROFILE)
    threads = None if runtime == "torch" else 1
    async with running_tail(tails_for(service_detector, runtime, threads, device)) as server:
        config = AgentConfig(tail={"address": f"127.0.0.1:{server.port}", "insecure": True},
                             cameras=[{"id": "door", "url": str(clip)}], output=str(out))
        head = head_runtime(runtime, service_detector, threads, device=device)
        backend = RuntimeHeadBackend(head, service_detector.input_size, profile,
                                     clean_fingerprint(service_detector.source))
        assert backend.head.noise.stream.device.type == device  # the noise is drawn where the activation is
        sink = JsonLinesSink(str(out))
        summary = await EdgeAgent(config, backend, sink).run()
        sink.close()
    records = read_lines(out)
    frames = decoded_frames(clip)
    # keep-latest may drop a few; a runtime on one thread (the graph runtimes here) drops more on a busy machine,
    # and what this checks for them is each answered frame's boxes
    assert len(records) == summary.answered["door"] >= (len(frames) // 2 if runtime == "torch" else 3)
    assert len(records) + summary.dropped["door"] == len(frames)
    for record in records:
        frame = frames[record["frame_index"]]
        assert (record["width"], record["height"]) == (frame.shape[1], frame.shape[0])
        expected = service_detector.detect(frame)
        assert len(record["boxes"]) == len(expected) == 1
        assert iou(np.array(record["boxes"][0]), expected[0]) > 0.7
        assert record["latency_ms"]["end_to_end"] > record["latency_ms"]["head"] > 0
    assert [r["sequence"] for r in records] == sorted(r["sequence"] for r in records)
    assert set(summary.stages) >= {"decode", "head", "noise", "uplink_round_trip", "end_to_end"}


async def test_an_agent_with_more_cameras_than_the_tail_takes_says_so_and_serves_the_rest(
        service_detector, clip, tmp_path, caplog):
    """The tail says its stream caps in GetInfo; an agent with more cameras than they allow it warns once, in
    words naming the tail's flag, and keeps going: the cameras that got a stream are answered."""
    from cloud_tail import metrics as tail_metrics
    from cloud_tail.limits import StreamLimits

    def refused() -> float:
        return tail_metrics.REGISTRY.get_sample_value("frosted_tail_streams_refused_total",
                                                      {"reason": "max_streams_per_connection"}) or 0.0

    caplog.set_level(logging.WARNING, logger="edge_agent")
    out = tmp_path / "boxes.jsonl"
    before = refused()
    limits = StreamLimits(max_streams_per_connection=2, max_streams_per_client=3)
    async with running_tail(tails_for(service_detector), limits=limits) as server:
        config = AgentConfig(tail={"address": f"127.0.0.1:{server.port}", "insecure": True},
                             cameras=[{"id": f"gate-{i}", "url": str(clip)} for i in range(3)], output=str(out))
        head = head_runtime("torch", service_detector)
        backend = RuntimeHeadBackend(head, service_detector.input_size, load_profile_for(service_detector, PROFILE),
                                     clean_fingerprint(service_detector.source))
        sink = JsonLinesSink(str(out))
        summary = await EdgeAgent(config, backend, sink).run()
        sink.close()
    warnings = [r.getMessage() for r in caplog.records if "will wait for a free stream" in r.getMessage()]
    assert warnings == [f"tail 127.0.0.1:{server.port} takes at most 2 streams from this agent "
                        "(--max-streams-per-connection 2) and this agent has 3 cameras, a stream each: 1 will wait "
                        "for a free stream; raise that cap on the tail, or split the cameras over agents"]
    assert refused() >= before + 1  # three clips playing at once: one stream over the cap
    assert sum(1 for answered in summary.answered.values() if answered) >= 2


def test_the_limits_a_tail_says_are_compared_with_the_agents_cameras_and_window() -> None:
    from edge_agent.tail_check import past_the_tails_limits
    from frosted_wire.v1 import tail_pb2

    assert past_the_tails_limits(tail_pb2.TailInfo(), 500, 64, "t:1") == []  # Triton's: says no limits
    info = tail_pb2.TailInfo(max_streams_per_connection=32, max_streams_per_client=8, max_in_flight_per_stream=8)
    assert past_the_tails_limits(info, 8, 8, "t:1") == []
    [streams] = past_the_tails_limits(info, 9, 2, "t:1")
    assert streams.startswith("tail t:1 takes at most 8 streams from this agent (--max-streams-per-client 8) and "
                              "this agent has 9 cameras, a stream each: 1 will wait")
    [both] = past_the_tails_limits(tail_pb2.TailInfo(max_streams_per_connection=32, max_streams_per_client=32),
                                   40, 2, "t:1")
    assert "(--max-streams-per-connection 32, --max-streams-per-client 32)" in both and "8 will wait" in both
    assert both.endswith("raise those caps on the tail, or split the cameras over agents")
    [window] = past_the_tails_limits(info, 1, 20, "t:1")
    assert window == ("tail.window 20 is more than the 8 frames the tail t:1 computes per stream at once (its "
                      "--max-in-flight): the other 12 would wait in transit, adding their latency to every frame; "
                      "set tail.window to at most 8")


@pytest.mark.slow  # agent and tail in a subprocess
def test_demo_runs_the_live_path_in_one_command():
    result = run_frosted("demo", "--seconds", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) >= 8  # 15 frames at 15 fps; a few may be dropped by keep-latest on a slow machine
    assert all(len(r["boxes"]) == 1 and r["width"] == 1280 for r in records)
    assert "end_to_end" in result.stderr and "TLS" in result.stderr


@pytest.mark.parametrize("flags, status, named", [
    (["--noise", "no-such-profile"], 1, "no-such-profile: no such profile file, and not a shipped profile"),
    # an option that contradicts the profile: a usage error
    (["--input-size", "512"], 2, "fitted for input size 1024x1024, not 512x512; pass --input-size 1024x1024"),
])
def test_demo_refuses_a_profile_it_cannot_run_in_one_line(flags, status, named, weights_path):
    result = invoke_frosted("demo", "--seconds", "1", "--weights", str(weights_path), *flags)
    assert result.returncode == status and not result.stdout, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and named in lines[0], result.stderr[-2000:]


def _start_tail(port: int, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "frosted", "tail", "--listen", f"127.0.0.1:{port}", *extra],
                               cwd=REPO, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 60
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if "tail listening" in line:
            return process
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"tail did not start: {process.stderr.read()[-2000:]}")


@pytest.mark.slow  # agents and a tail in subprocesses (~20 s)
def test_edge_and_tail_verbs_over_loopback(clip, tmp_path):
    port = free_port()
    tail = _start_tail(port, "--insecure", "--noise", PROFILE, "--serve-clean")  # --serve-clean: the --no-noise run
    try:
        out = tmp_path / "boxes.jsonl"
        result = run_frosted("edge", "--source", str(clip), "--camera-id", "lobby", "--tail", f"127.0.0.1:{port}",
                             "--insecure", "--noise", PROFILE, "--json", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "WARNING: --insecure" in result.stderr
        records = read_lines(out)
        assert len(records) >= 8 and {r["camera"] for r in records} == {"lobby"}
        assert all(len(r["boxes"]) == 1 for r in records)
        # Two cameras from a config file, the output path from the environment (YAML < env < flags).
        config = tmp_path / "cameras.yaml"
        config.write_text(f"tail: {{address: '127.0.0.1:{port}', insecure: true}}\n"
                          f"noise: {{profile: {PROFILE}}}\n"
                          f"cameras:\n  - {{id: east, url: '{clip}'}}\n  - {{id: west, url: 'file://{clip}'}}\n"
                          "output: ignored.jsonl\n")
        both = tmp_path / "both.jsonl"
        result = run_frosted("edge", "--config", str(config), env={"FROSTED_EDGE_OUTPUT": str(both)})
        assert result.returncode == 0, result.stderr[-2000:]
        records = read_lines(both)
        assert {r["camera"] for r in records} == {"east", "west"}
        assert all(len(r["boxes"]) == 1 for r in records)
        assert not (REPO / "ignored.jsonl").exists()
        # A profile the tail does not serve: refused up front, in one line.
        wrong = run_frosted("edge", "--source", str(clip), "--tail", f"127.0.0.1:{port}", "--insecure",
                            "--noise", "alpha-0.4")
        assert wrong.returncode == 1
        error_lines = [line for line in wrong.stderr.splitlines() if line.startswith("Error:")]
        assert len(error_lines) == 1 and "does not serve this agent's profile" in error_lines[0]
        # Clean activations only when asked for by name, and loudly.
        clean = run_frosted("edge", "--source", str(clip), "--tail", f"127.0.0.1:{port}", "--insecure",
                            "--no-noise", "--seconds", "2")
        assert clean.returncode == 0, clean.stderr[-2000:]
        assert "WARNING: --no-noise: CLEAN activations" in clean.stderr
        assert len(clean.stdout.splitlines()) >= 1
    finally:
        tail.send_signal(signal.SIGTERM)
        tail.wait(timeout=30)
    assert tail.returncode == 0  # SIGTERM drains and exits cleanly


@pytest.mark.parametrize("yaml_text, field", [
    ("tail: {address: 'localhost:5000'}\ncameras: []\n", "cameras"),
    ("tail: {address: 'no-port'}\ncameras: [{id: a, url: x.mp4}]\n", "tail.address"),
    ("tail: {address: 'h:1', windo: 3}\ncameras: [{id: a, url: x.mp4}]\n", "tail.windo"),
    ("tail: {address: 'h:1'}\ncameras: [{id: a, url: x.mp4}, {id: a, url: y.mp4}]\n", "cameras"),
    ("tail: {address: 'h:1', tls: {cert: /nope.pem}}\ncameras: [{id: a, url: x.mp4}]\n", "tail.tls"),
    ("tail: [unclosed\n", "not valid YAML"),
    ("tail: {address: 'h:1'}\ncameras: [{id: a, url: x.mp4}]\nmodel: {split: conv3}\n", "model.split"),
])
def test_a_bad_config_is_one_line_naming_the_field(tmp_path, yaml_text, field):
    config = tmp_path / "cameras.yaml"
    config.write_text(yaml_text)
    result = invoke_frosted("edge", "--config", str(config))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and field in lines[0], result.stderr


def test_tail_refuses_plaintext_unless_asked():
    """In a process of its own, as a user runs it: a usage error is exit status 2 from the interpreter too."""
    result = run_frosted("tail", "--listen", "127.0.0.1:0")
    assert result.returncode == 2 and "--insecure" in result.stderr


def test_config_precedence_yaml_then_environment_then_flags(tmp_path, monkeypatch):
    from edge_agent.config import load_agent_config

    config = tmp_path / "cameras.yaml"
    config.write_text("tail: {address: 'tail.example:443', window: 3, dtype: int8}\n"
                      "cameras: [{id: door, url: 'rtsp://cam/1'}]\n")
    assert load_agent_config(config, {}).tail.window == 3
    monkeypatch.setenv("FROSTED_EDGE_TAIL__WINDOW", "5")
    loaded = load_agent_config(config, {})
    assert (loaded.tail.window, loaded.tail.dtype) == (5, "int8")
    assert load_agent_config(config, {"tail": {"window": 7}}).tail.window == 7
