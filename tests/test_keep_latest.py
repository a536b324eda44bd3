"""One keep-latest primitive for every hand-off of frames (the decode thread's to the loop, a source's to its
camera's pipeline): one slot and an event, every replacement counted, and counted in the drop metric."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from edge_agent import metrics
from edge_agent.camera import CameraPipeline
from edge_agent.sources import Frame, LatestFrameSlot
from edge_agent.sources.av_source import AvSource
from edge_agent.summary import summarise
from tests.waiting import DEADLINE, wait_until, wait_until_sync


def make_frame(index: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), time.time(), 0.0, index)


def paced_clip(path: Path, count: int = 90, fps: int = 30) -> Path:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(count):
            image = np.full((48, 64, 3), i % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())
    return path


async def test_frames_put_from_another_thread_wake_the_loop_and_replacements_are_counted() -> None:
    slot = LatestFrameSlot()
    waiter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0)  # one turn of the loop: the consumer now waits, so the put must wake it up
    threading.Thread(target=slot.put, args=(make_frame(0),)).start()
    assert (await asyncio.wait_for(waiter, DEADLINE)).index == 0

    def burst() -> None:
        for i in range(1, 4):
            slot.put(make_frame(i))
        slot.close(ConnectionError("camera gone"))

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join(DEADLINE)
    assert slot.dropped == 2 and (await slot.get()).index == 3  # the newest; the two before it counted
    with pytest.raises(ConnectionError, match="camera gone"):  # once the pending frame is out: how it ended
        await slot.get()
    assert not slot.put(make_frame(4)) and slot.dropped == 2  # refused once closed: not a replacement


async def test_put_when_taken_keeps_every_frame() -> None:
    slot = LatestFrameSlot()
    put: list[bool] = []

    def produce() -> None:
        put.extend(slot.put_when_taken(make_frame(i)) for i in range(5))
        slot.close()

    thread = threading.Thread(target=produce)
    thread.start()
    taken = []
    while (frame := await asyncio.wait_for(slot.get(), DEADLINE)) is not None:
        taken.append(frame.index)
    thread.join(DEADLINE)
    assert taken == list(range(5)) and put == [True] * 5 and slot.dropped == 0


def test_a_producer_waiting_for_room_is_released_by_close() -> None:
    slot = LatestFrameSlot()
    slot.put(make_frame(0))
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(slot.put_when_taken(make_frame(1))))
    thread.start()
    slot.close()  # the consumer leaves: the decode thread must not wait for it forever
    wait_until_sync(lambda: result, "the producer released")
    assert result == [False]


async def test_the_decode_threads_replacements_reach_the_drop_metric(tmp_path: Path) -> None:
    # a paced file drops like a camera: frames the consumer is too slow for are replaced in the thread's slot
    source = AvSource(str(paced_clip(tmp_path / "paced.mp4")), live=False, realtime=True)
    camera = "keep-latest-handoff"
    stream = SimpleNamespace(last_error=None)  # the pipeline hooks its callbacks onto it; the summary reads it
    pipeline = CameraPipeline(camera, source, backend=None, stream=stream, compute=None, sink=None)  # type: ignore[arg-type]
    frames = source.frames()
    try:
        await anext(frames)
        # the consumer takes nothing more: the thread keeps decoding, each frame replacing the one before
        await wait_until(lambda: source.dropped >= 3, "the decode thread replacing untaken frames")
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await frames.aclose()
    dropped = source.dropped  # final: a closed slot takes no more frames, so none are replaced
    pipeline._count_keep_latest_drops()  # what the pipeline does after each frame it takes
    sample = metrics.REGISTRY.get_sample_value("frosted_edge_frames_dropped_total",
                                               {"camera": camera, "reason": "keep_latest"})
    assert sample == dropped == pipeline.dropped >= 3
    summary = summarise([pipeline])
    assert summary.dropped[camera] == dropped
    assert summary.unanswered[camera] == f"{dropped} read, none sent: the uplink never had room"


class HangingUpSource:
    """A live source whose session ends with a shielded hang-up, as WHEP's DELETE of its session is."""

    live = True
    url = "whep://camera.example/whep"
    dropped = 0

    def __init__(self) -> None:
        self.yielded = 0
        self.hung_up = False

    async def frames(self):
        try:
            while True:
                self.yielded += 1
                yield make_frame(self.yielded)
                await asyncio.sleep(0)  # a frame per turn of the loop
        finally:
            await asyncio.shield(self._hang_up())

    async def _hang_up(self) -> None:
        for _ in range(50):  # a DELETE on its way: it takes the loop a while
            await asyncio.sleep(0)
        self.hung_up = True


class IdleStream:
    """The uplink's side, with nothing ever in flight: idle once the test says so."""

    def __init__(self) -> None:
        self.on_answer = self.on_lost = None
        self.idle = asyncio.Event()

    def wake(self) -> None:
        return None

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_for_room(self, give_up) -> bool:
        return False

    async def wait_until_idle(self) -> None:
        await self.idle.wait()


async def test_a_stopped_camera_lets_its_source_hang_up_before_it_returns() -> None:
    # stop() cancels the feed, and the pipeline's own cleanup cancelled it again: that second cancel cut the
    # source's shielded hang-up short (aiohttp's "Unclosed client session" at every WHEP camera's stop)
    source, stream = HangingUpSource(), IdleStream()
    pipeline = CameraPipeline("hang-up", source, backend=None, stream=stream, compute=None, sink=None)  # type: ignore[arg-type]
    running = asyncio.create_task(pipeline.run())
    await wait_until(lambda: source.yielded >= 3, "frames flowing")
    pipeline.stop()
    stream.idle.set()
    await asyncio.wait_for(running, DEADLINE)
    assert source.hung_up
