"""The edge agent tried as a hostile user would: values that would crash or silently stall it are refused in one
line, a box output that cannot be written stops it with that line (it used to stop answering and exit 0), and
recordings whose timestamps restart are paced as they play."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from edge_agent.config import MAX_CONFIG_BYTES, ConfigError, load_agent_config
from edge_agent.sink import FrameResult, JsonLinesSink, SinkError
from edge_agent.sources import Backoff, SourceError, av_source, open_source
from edge_agent.uplink import CameraStream, TailRefusedError, UplinkError
from frosted.demo import make_clip
from tests.conftest import REPO, run_frosted
from tests.rig.servers import free_port
from tests.tail_helpers import PROFILE, running_tail, tails_for

OK = {"tail": {"address": "h:1", "insecure": True}, "cameras": [{"id": "door", "url": "door.mp4"}]}


def refused(overrides: dict, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        load_agent_config(path, overrides)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(("section", "values", "field"), [
    ("tail", {"deadline_seconds": 1e10}, "tail.deadline_seconds"),  # gRPC's deadline overflowed: never connected
    ("tail", {"deadline_seconds": float("inf")}, "tail.deadline_seconds"),
    ("model", {"threads": 99999}, "model.threads"),  # torch segfaulted
    ("preview", {"fps": float("nan")}, "preview.fps"),
    ("sources", {"open_seconds": 1e12}, "sources.open_seconds"),
    ("sources", {"reconnect_initial_seconds": 5, "reconnect_max_seconds": 1}, "sources"),  # a traceback, late
])
def test_values_that_would_crash_or_stall_the_agent_are_refused(section: str, values: dict, field: str) -> None:
    merged = {**OK, section: {**OK.get(section, {}), **values}}
    assert refused(merged).startswith(f"{field}:")


def test_config_files_and_environments_that_lie_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:  # a comment of megabytes stalled the start for minutes
        f.truncate(MAX_CONFIG_BYTES + 1)
    assert "more than a config's" in refused({}, big)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    assert "not UTF-8" in refused({}, binary)
    good = tmp_path / "cameras.yaml"
    good.write_text("tail: {address: 'h:1', insecure: true}\ncameras: [{id: a, url: x.mp4}]\n")
    monkeypatch.setenv("FROSTED_EDGE_TAIL__WINDOW", "abc")  # the environment's value, not the file's
    assert refused({}, good).startswith("tail.window:")
    monkeypatch.setenv("FROSTED_EDGE_CAMERAS", "notjson")
    assert refused({}, good).startswith("environment:")
    monkeypatch.delenv("FROSTED_EDGE_CAMERAS")
    monkeypatch.delenv("FROSTED_EDGE_TAIL__WINDOW")
    good.write_text("tail: {address: 'h:1', insecure: true, window: abc}\ncameras: [{id: a, url: x.mp4}]\n")
    assert refused({}, good).startswith(f"{good}: tail.window:")


def test_a_source_name_too_long_for_the_filesystem_is_not_found_in_one_line() -> None:
    with pytest.raises(SourceError, match=r"video file not found: a{200}\.\.\. \(5004 characters\)"):
        open_source("a" * 5000 + ".mp4")


def test_a_full_output_is_a_sink_error_and_closing_it_adds_none(tmp_path: Path) -> None:
    result = FrameResult("door", 0, 0, 0.0, 8, 8, np.zeros((0, 5), np.float32), {})
    sink = JsonLinesSink("/dev/full")
    with pytest.raises(SinkError, match="output /dev/full: cannot write"):
        sink.write(result)
    sink.close()


def test_an_output_the_run_made_and_never_wrote_is_removed_but_one_it_found_is_kept(tmp_path: Path) -> None:
    """A run that failed to start (a bad profile, a tail that refuses) leaves no empty boxes file behind, to be
    taken for a run that saw no faces; a file that was there, or got a line, stays."""
    made = tmp_path / "boxes.jsonl"
    JsonLinesSink(str(made)).close()
    assert not made.exists()
    found = tmp_path / "found.jsonl"
    found.touch()
    JsonLinesSink(str(found)).close()
    assert found.exists()
    sink = JsonLinesSink(str(made))
    sink.write(FrameResult("door", 0, 0, 0.0, 8, 8, np.zeros((0, 5), np.float32), {}))
    sink.close()
    assert len(made.read_text().splitlines()) == 1


def test_a_fifo_output_without_a_reader_is_one_line_and_with_one_gets_the_lines(tmp_path: Path) -> None:
    fifo = tmp_path / "boxes"
    os.mkfifo(fifo)
    with pytest.raises(SinkError, match=r"^output .*boxes: a FIFO that no process is reading; start its reader first$"):
        JsonLinesSink(str(fifo))  # used to wait, silent, for a reader that may never come
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = JsonLinesSink(str(fifo))
        sink.write(FrameResult("door", 3, 3, 0.0, 8, 8, np.zeros((0, 5), np.float32), {}))
        assert b'"camera": "door", "sequence": 3' in os.read(reader, 4096)
        sink.close()
    finally:
        os.close(reader)


class RefusingTail:
    """A transport whose tail takes the stream, then refuses its frames (a tail restarted with other profiles)."""

    address = "tail.example:50051"

    def __init__(self) -> None:
        self.opened = 0

    async def wait_ready(self) -> None:
        return None

    def open(self, camera_id: str) -> RefusingTail:
        self.opened += 1
        return self

    async def write(self, frame: object) -> None:
        return None

    async def read(self) -> None:
        raise UplinkError(grpc.StatusCode.FAILED_PRECONDITION, "profile 1234 is not served here")

    def cancel(self) -> None:
        return None


async def test_a_tail_that_refuses_the_frames_mid_run_ends_the_camera_not_an_endless_retry() -> None:
    tail = RefusingTail()
    stream = CameraStream(tail, "door", backoff=Backoff(0.01, 0.01))  # type: ignore[arg-type]
    with pytest.raises(TailRefusedError, match=r"camera door: the tail refuses its frames \(FAILED_PRECONDITION: "
                                               r"profile 1234 is not served here\)"):
        await asyncio.wait_for(stream.run(), 60)
    assert tail.opened == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class Handoff:
    """The consumer's side of the pacer: each wait is recorded and passes on the fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.waits = clock, []

    def wait_closed(self, seconds: float) -> bool:
        self.waits.append(round(seconds, 3))
        self.clock.now += seconds
        return False


class Frame:
    def __init__(self, time: float) -> None:
        self.time = time


class Stream:
    average_rate = guessed_rate = 10


def test_recordings_joined_end_to_end_are_paced_after_their_timestamps_restart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(av_source, "time", clock)
    pacer, handoff = av_source._Pacer(Stream()), Handoff(clock)
    segment = [round(0.1 * i, 1) for i in range(50)]  # 5 s of frames, then the next recording starts at 0 again
    for pts in segment + segment:
        assert pacer.wait(Frame(pts), handoff)
    # every frame but each recording's first waits its 0.1 s; without the resync the second recording's frames
    # were all 5 s overdue, released at once, and dropped by keep-latest
    assert handoff.waits == [0.1] * 49 + [0.1] * 49


@pytest.mark.slow  # an agent in its own process
async def test_an_agent_whose_boxes_cannot_be_written_stops_saying_so(faceboxes, weights_path, tmp_path):
    from facesplit.detector import SplitDetector
    from facesplit.postprocess import PostprocessConfig

    clip = make_clip(tmp_path / "long.mp4", seconds=120, fps=5, size=(320, 240))  # longer than the test waits
    detector = SplitDetector(faceboxes, postprocess=PostprocessConfig(score_threshold=0.5))
    async with running_tail(tails_for(detector)) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "frosted", "edge", "--source", str(clip), "--tail", f"127.0.0.1:{server.port}",
            "--insecure", "--noise", PROFILE, "--weights", str(weights_path), "--json", "/dev/full",
            "--threads", "1", cwd=REPO, stderr=asyncio.subprocess.PIPE, env=os.environ.copy())
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    lines = stderr.decode().strip().splitlines()
    assert process.returncode == 1, lines[-5:]
    assert lines[-1] == "Error: output /dev/full: cannot write (No space left on device)"
    assert "Traceback" not in stderr.decode()


@pytest.mark.slow  # an agent in its own process
def test_a_run_that_answered_nothing_exits_1(weights_path, tmp_path):
    clip = make_clip(tmp_path / "short.mp4", seconds=1, fps=5, size=(320, 240))
    address = f"127.0.0.1:{free_port()}"
    result = run_frosted("edge", "--source", str(clip), "--tail", address, "--insecure",
                         "--noise", PROFILE, "--weights", str(weights_path), "--threads", "1")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: no frame of camera camera-1 was answered: the tail {address} was not "
                           "reachable (last: UNAVAILABLE: "), last
    assert "Connection refused" in last, last
