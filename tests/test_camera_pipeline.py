"""A camera's pipeline over a fake uplink transport (the seam `edge_agent.uplink.UplinkTransport`): the order of
events the real tail leaves to chance, forced here."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edge_agent.backend import EncodedFrame
from edge_agent.camera import CameraPipeline
from edge_agent.sink import JsonLinesSink
from edge_agent.sources import Frame
from edge_agent.summary import summarise
from edge_agent.uplink import CameraStream
from facesplit.preprocess import Letterbox
from frosted_wire.v1 import tail_pb2
from tests.waiting import DEADLINE, wait_until


class EchoSession:
    """Answers every frame with no boxes."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[tail_pb2.Detections] = asyncio.Queue()

    async def write(self, frame: tail_pb2.ActivationFrame) -> None:
        await self.answers.put(tail_pb2.Detections(sequence=frame.sequence))

    async def read(self) -> tail_pb2.Detections | None:
        return await self.answers.get()

    def cancel(self) -> None:
        return None


class EchoTransport:
    address = "fake:1"

    async def wait_ready(self) -> None:
        return None

    def open(self, camera_id: str) -> EchoSession:
        return EchoSession()

    async def close(self) -> None:
        return None


class OneImage:
    """A file source of one frame, which it hands over and ends with at once: `edge --source photo.jpg`."""

    live = False
    url = "photo.jpg"
    dropped = 0

    def __init__(self) -> None:
        self.done = False

    async def frames(self):
        yield Frame(np.zeros((48, 64, 3), np.uint8), time.time(), 0.0, 0)
        self.done = True


class BlankHead:
    fingerprint = "f" * 64
    noisy = False

    def encode(self, frame_bgr: np.ndarray) -> EncodedFrame:
        return EncodedFrame(tail_pb2.Tensor(), Letterbox(1.0, 64, 48, 64, 48), {"head": 0.0})


async def test_a_files_last_frame_is_sent_once_the_uplink_opens_though_the_file_ended_before(tmp_path: Path):
    """The one image of `edge --source photo.jpg` is read before the tail check has answered: the file has ended
    while the uplink has no room yet. It used to be given up on ("no frame was answered"), on a fast disk."""
    tail_checked = asyncio.Event()
    stream = CameraStream(EchoTransport(), "door", ready=tail_checked)
    source, sink = OneImage(), JsonLinesSink(str(tmp_path / "boxes.jsonl"))
    with ThreadPoolExecutor(1) as compute:
        pipeline = CameraPipeline("door", source, BlankHead(), stream, compute, sink)
        running = asyncio.create_task(pipeline.run())
        await wait_until(lambda: source.done and pipeline.slot.closed, "the file to end before the tail is checked")
        assert pipeline.slot.pending and not running.done()
        tail_checked.set()
        await asyncio.wait_for(running, DEADLINE)
    sink.close()
    assert pipeline.answered == 1 and pipeline.lost == 0
    assert len((tmp_path / "boxes.jsonl").read_text().splitlines()) == 1


async def test_a_stopped_camera_gives_up_its_pending_frame_when_the_uplink_has_no_room(tmp_path: Path):
    """Stopping (--seconds, a signal) must not wait on a tail that is not there for a frame not yet sent."""
    stream = CameraStream(EchoTransport(), "door", ready=asyncio.Event())  # the tail is never checked
    source, sink = OneImage(), JsonLinesSink(str(tmp_path / "boxes.jsonl"))
    with ThreadPoolExecutor(1) as compute:
        pipeline = CameraPipeline("door", source, BlankHead(), stream, compute, sink)
        running = asyncio.create_task(pipeline.run())
        await wait_until(lambda: source.done and pipeline.slot.closed, "the file to end")
        pipeline.stop()
        await asyncio.wait_for(running, DEADLINE)
    sink.close()
    assert pipeline.answered == 0


async def test_a_files_last_frame_waits_for_room_at_most_the_streams_deadline(tmp_path: Path):
    """A tail that never comes up does not hold an ended file: its last frame is given up on, as a sent frame
    is given up on when unanswered for the deadline."""
    stream = CameraStream(EchoTransport(), "door", deadline=0.2, ready=asyncio.Event())  # never checked
    source, sink = OneImage(), JsonLinesSink(str(tmp_path / "boxes.jsonl"))
    with ThreadPoolExecutor(1) as compute:
        pipeline = CameraPipeline("door", source, BlankHead(), stream, compute, sink)
        await asyncio.wait_for(pipeline.run(), DEADLINE)
    sink.close()
    assert pipeline.answered == 0 and source.done
    assert summarise([pipeline], "the tail had not answered").unanswered == {"door": "the tail had not answered"}
    assert summarise([pipeline]).unanswered == {"door": "1 read, none sent: the uplink never had room"}


class NoImage(OneImage):
    async def frames(self):
        self.done = True
        return
        yield


async def test_a_camera_that_had_no_answer_says_why(tmp_path: Path):
    stream = CameraStream(EchoTransport(), "door", ready=asyncio.Event())
    source, sink = NoImage(), JsonLinesSink(str(tmp_path / "boxes.jsonl"))
    with ThreadPoolExecutor(1) as compute:
        pipeline = CameraPipeline("door", source, BlankHead(), stream, compute, sink)
        await asyncio.wait_for(pipeline.run(), DEADLINE)
    sink.close()
    assert summarise([pipeline], "the tail had not answered").unanswered == {
        "door": "its source gave no frame; the tail had not answered"}
