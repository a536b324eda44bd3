"""SIGTERM, SIGHUP and SIGINT all drain the edge agent: it stops taking frames, waits for the frames in
flight to be answered, prints its summary and exits 0 (systemd and Kubernetes stop services with SIGTERM)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from facesplit.detector import SplitDetector
from facesplit.postprocess import PostprocessConfig
from frosted.demo import make_clip
from tests.conftest import REPO
from tests.tail_helpers import PROFILE, running_tail, tails_for
from tests.waiting import wait_until

DEADLINE = 120  # seconds for the agent to start answering, and again for it to drain and exit


@pytest.fixture(scope="module")
def service_detector(faceboxes) -> SplitDetector:
    return SplitDetector(faceboxes, postprocess=PostprocessConfig(score_threshold=0.5))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    # longer than any test waits: the agent must still be streaming when the signal comes
    return make_clip(tmp_path_factory.mktemp("clip") / "long.mp4", seconds=120, fps=5, size=(320, 240))


def answered_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow  # an agent in a subprocess, per signal
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
async def test_a_stop_signal_drains_the_agent(sig, service_detector, long_clip, weights_path, tmp_path):
    out = tmp_path / "boxes.jsonl"
    async with running_tail(tails_for(service_detector)) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "frosted", "edge", "--source", str(long_clip), "--tail",
            f"127.0.0.1:{server.port}", "--insecure", "--noise", PROFILE, "--weights", str(weights_path),
            "--json", str(out), "--threads", "1", cwd=REPO, stderr=asyncio.subprocess.PIPE,
            env=os.environ.copy())
        try:
            await wait_until(lambda: answered_lines(out) >= 3 or process.returncode is not None, "3 answered frames",
                             DEADLINE)
            assert process.returncode is None, "the agent ended before the signal"
            process.send_signal(sig)
            _, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = stderr.decode()
    assert process.returncode == 0, log[-2000:]
    summary = re.search(r"camera camera-1: (\d+) frames answered, \d+ dropped \(keep-latest\), (\d+) lost", log)
    assert summary, log[-2000:]
    answered, lost = int(summary.group(1)), int(summary.group(2))
    assert lost == 0  # the frames in flight when the signal came were answered, not abandoned
    assert answered == answered_lines(out) >= 3
    assert f"{sig.name}: stopping" in log
