"""The live service with real feeds: a gst-rtsp-server camera and an aiortc WHEP camera through the agent and a
real tail, and chaos: tail killed and restarted, camera killed and restarted, memory bounded throughout."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent import metrics
from edge_agent.agent import EdgeAgent
from edge_agent.backend import TorchHeadBackend
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from facesplit.detector import SplitDetector
from facesplit.images import sample_image
from facesplit.noise.shipped import load_profile_for
from facesplit.postprocess import PostprocessConfig
from facesplit.weights import clean_fingerprint
from tests.conftest import REPO
from tests.rig.servers import RtspServer, free_port
from tests.rig.whep_camera import start_whep_camera
from tests.tail_helpers import PROFILE, running_tail, tails_for
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # live feeds end to end, tails in subprocesses


@pytest.fixture(scope="module")
def service_detector(faceboxes) -> SplitDetector:
    return SplitDetector(faceboxes, postprocess=PostprocessConfig(score_threshold=0.5))


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("camera") / "astronaut.png"
    cv2.imwrite(str(path), sample_image("astronaut"))
    return path


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def agent_for(detector: SplitDetector, tail_port: int, url: str, out: Path, **tail: object) -> EdgeAgent:
    config = AgentConfig(tail={"address": f"127.0.0.1:{tail_port}", "insecure": True, **tail},
                         cameras=[{"id": "cam", "url": url}], output=str(out),
                         sources={"open_seconds": 5, "read_seconds": 2})
    profile = load_profile_for(detector, PROFILE)
    return EdgeAgent(config, TorchHeadBackend(detector, profile, clean_fingerprint(detector.source)),
                     JsonLinesSink(str(out)))


def reconnects(link: str) -> float:
    """The agent's reconnections of camera 'cam' over ``link`` ('source' or 'uplink') so far, in this process."""
    return metrics.REGISTRY.get_sample_value("frosted_edge_reconnects_total", {"camera": "cam", "link": link}) or 0.0


async def run_until_answered(agent: EdgeAgent, frames: int) -> None:
    task = asyncio.create_task(agent.run())
    try:
        await wait_until(lambda: agent.pipelines and agent.pipelines[0].answered >= frames,
                         f"{frames} answered frames")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        agent.sink.close()


def check_boxes(out: Path, expected: np.ndarray, size: tuple[int, int], min_frames: int) -> None:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) >= min_frames
    for record in records:
        assert (record["width"], record["height"]) == size
        # noise + lossy video may add a marginal extra box; the confident ones are exactly the face
        confident = [box for box in record["boxes"] if box[4] >= 0.7]
        assert len(confident) == 1, record["boxes"]
        assert iou(np.array(confident[0]), expected) > 0.6, (confident[0], expected)


async def test_rtsp_camera_end_to_end(service_detector, astronaut_png, gst_rtsp, tmp_path):
    expected = service_detector.detect(cv2.resize(sample_image("astronaut"), (640, 480)))
    assert len(expected) == 1
    with RtspServer(astronaut_png, 640, 480, fps=15) as camera:
        async with running_tail(tails_for(service_detector)) as tail:
            agent = agent_for(service_detector, tail.port, camera.url, tmp_path / "out.jsonl")
            await run_until_answered(agent, 10)
    check_boxes(tmp_path / "out.jsonl", expected[0], (640, 480), 10)


async def test_whep_camera_end_to_end(service_detector, tmp_path):
    image = sample_image("astronaut")
    expected = service_detector.detect(image)
    camera, url = await start_whep_camera(image, fps=15)
    try:
        async with running_tail(tails_for(service_detector)) as tail:
            agent = agent_for(service_detector, tail.port, url.replace("http://", "whep://"), tmp_path / "o.jsonl")
            await run_until_answered(agent, 10)
    finally:
        await camera.stop()
    check_boxes(tmp_path / "o.jsonl", expected[0], (512, 512), 10)
    assert camera.deleted, "the agent ends its WHEP session with DELETE"


def start_tail_process(port: int, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "frosted", "tail", "--listen", f"127.0.0.1:{port}",
                                "--insecure", "--noise", PROFILE, "--threads", "1", *extra], cwd=REPO,
                               stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stderr is not None
    for line in process.stderr:  # until it listens, or ends
        if "tail listening" in line:
            return process
    process.kill()
    raise AssertionError("tail process did not start")


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def test_chaos_tail_and_camera_killed_and_restarted(service_detector, astronaut_png, gst_rtsp, tmp_path):
    port = free_port()
    tail = start_tail_process(port)
    bounds: list[tuple[int, int]] = []  # (pending frames in the slot, frames in flight) sampled throughout
    try:
        with RtspServer(astronaut_png, 640, 480, fps=15) as camera:
            agent = agent_for(service_detector, port, camera.url, tmp_path / "out.jsonl", window=3,
                              deadline_seconds=1.5)
            task = asyncio.create_task(agent.run())

            async def sample_bounds() -> None:
                while True:
                    if agent.pipelines:
                        pipeline = agent.pipelines[0]
                        bounds.append((int(pipeline.slot.pending), pipeline.stream.in_flight))
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample_bounds())
            try:
                answered = lambda: agent.pipelines[0].answered if agent.pipelines else 0  # noqa: E731
                idle = lambda: agent.pipelines[0].stream.in_flight == 0  # noqa: E731
                await wait_until(lambda: answered() >= 10, "first answers")
                rss_before = rss_mib()

                # 1. the tail dies mid-stream, then comes back on the same address
                uplink_retries = reconnects("uplink")
                tail.send_signal(signal.SIGKILL)
                tail.wait()
                await wait_until(lambda: reconnects("uplink") > uplink_retries and idle(),
                                 "the uplink to notice the dead tail and give up its frames in flight")
                stalled_at = answered()
                tail = await asyncio.to_thread(start_tail_process, port)
                await wait_until(lambda: answered() > stalled_at + 3, "answers after the tail's return", 120)

                # 2. the camera dies, then comes back on the same port
                source_retries = reconnects("source")
                camera.kill()
                await wait_until(lambda: reconnects("source") > source_retries and idle(),
                                 "the agent to notice the dead camera and answer its frames in flight")
                stalled_at = answered()
                camera.start()
                await wait_until(lambda: answered() > stalled_at, "answers after the camera's return")
                back_at = answered()
                await wait_until(lambda: answered() >= back_at + 20, "20 more answers (the memory settles)")
                rss_after = rss_mib()
            finally:
                sampler.cancel()
                task.cancel()
                await asyncio.gather(task, sampler, return_exceptions=True)
                agent.sink.close()
    finally:
        tail.kill()
        tail.wait()
    print(f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert max(p for p, _ in bounds) <= 1 and max(f for _, f in bounds) <= 3, "a queue grew"
    assert rss_after - rss_before < 150, f"agent memory grew {rss_after - rss_before:.0f} MiB"
    dropped = agent.summary().dropped["cam"]
    assert dropped > 0, "frames arriving while the tail was down are dropped and counted"
