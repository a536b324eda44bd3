"""One camera's pipeline: source -> keep-latest slot -> head + noise (compute thread) -> uplink -> sink."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edge_agent import metrics
from edge_agent.backend import HeadBackend
from edge_agent.sink import FrameResult, JsonLinesSink
from edge_agent.sources import Backoff, Frame, FrameSource, LatestFrameSlot, feed
from edge_agent.uplink import CameraStream
from facesplit.preprocess import Letterbox
from frosted_wire.v1 import tail_pb2

SUMMARY_SAMPLES = 10_000  # per stage, for the end-of-run summary; Prometheus holds the long-run view


@dataclass(frozen=True)
class SentFrame:
    frame: Frame
    letterbox: Letterbox
    stage_seconds: dict[str, float]
    activation: tail_pb2.Tensor  # what crossed the wire, for a watcher (the preview page) to show


class CameraWatcher(Protocol):
    """Sees a camera's answered frames and source disconnects (the preview page, `edge_agent.preview`).
    Called on the event loop, in the detection path: implementations keep references and count, nothing more."""

    def answered(self, result: FrameResult, image: np.ndarray, activation: tail_pb2.Tensor) -> None: ...

    def source_reconnecting(self) -> None: ...


class CameraPipeline:
    def __init__(self, camera_id: str, source: FrameSource, backend: HeadBackend, stream: CameraStream,
                 compute: Executor, sink: JsonLinesSink, source_backoff: Backoff | None = None,
                 lane: asyncio.Lock | None = None, watcher: CameraWatcher | None = None) -> None:
        self.camera_id = camera_id
        self.source = source
        self.backend = backend
        self.stream = stream
        self.compute = compute
        self.lane = lane or asyncio.Lock()  # shared by an agent's cameras: one frame computes at a time, FIFO
        self.sink = sink
        self.source_backoff = source_backoff
        self.watcher = watcher
        self.slot = LatestFrameSlot()
        self.sequence = 0
        self.answered = 0
        self.lost = 0  # frames sent (or being sent) that the uplink lost before an answer
        self._feeder: asyncio.Task[None] | None = None
        self._stopped = False
        self._feed_ended_at: float | None = None  # loop time
        self.samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=SUMMARY_SAMPLES))
        self._dropped_seen = 0
        stream.on_answer = self._on_answer
        stream.on_lost = self._on_lost
        metrics.declare_camera(camera_id)

    def _stage(self, stage: str, seconds: float) -> None:
        metrics.STAGE_SECONDS.labels(self.camera_id, stage).observe(seconds)
        self.samples[stage].append(seconds)

    def _on_lost(self, count: int) -> None:
        self.lost += count
        metrics.DROPPED.labels(self.camera_id, "uplink").inc(count)

    def stop(self) -> None:
        """Take no new frames (a pending one is still sent if the uplink has room); `run` returns once the
        frames in flight are answered or given up on."""
        self._stopped = True
        self.slot.close()
        if self._feeder is not None:
            self._feeder.cancel()
        self.stream.wake()

    @property
    def dropped(self) -> int:
        """Frames replaced by newer ones before processing: in the source's own hand-off, then in our slot."""
        return self.source.dropped + self.slot.dropped

    def _count_keep_latest_drops(self) -> None:
        dropped = self.dropped
        if dropped > self._dropped_seen:
            metrics.DROPPED.labels(self.camera_id, "keep_latest").inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped

    async def run(self) -> None:
        """Until the source ends (a file) or the task is cancelled (live sources reconnect forever)."""
        feeder = asyncio.create_task(feed(self.source, self.slot, backoff=self.source_backoff,
                                          on_reconnect=self._source_reconnecting),
                                     name=f"feed-{self.camera_id}")
        # the feed closes the slot when it ends: a sender waiting for uplink room must hear of it
        feeder.add_done_callback(self._feed_ended)
        self._feeder = feeder
        if self.slot.closed:  # stopped before it ran
            feeder.cancel()
        streamer = asyncio.create_task(self.stream.run(), name=f"uplink-{self.camera_id}")
        sender = asyncio.create_task(self._send_until_idle(), name=f"send-{self.camera_id}")
        try:
            # the uplink runs until cancelled: if it ends first, it failed for good (a tail refusing our frames,
            # boxes that cannot be written), and sending on would wait forever for room it will never have
            await asyncio.wait({sender, streamer}, return_when=asyncio.FIRST_COMPLETED)
            if streamer.done() and not streamer.cancelled() and (failure := streamer.exception()) is not None:
                raise failure
            await sender
        finally:
            for task in (sender, streamer):
                task.cancel()
            if not feeder.cancelling():  # once: a second cancel would cut short the source's shielded hang-up
                feeder.cancel()
            await asyncio.gather(sender, streamer, feeder, return_exceptions=True)
        error = feeder.exception() if feeder.done() and not feeder.cancelled() else None
        if error is not None:
            raise error  # e.g. SourceError: a file that cannot be decoded

    def _feed_ended(self, _: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        self._feed_ended_at = loop.time()
        self.stream.wake()
        loop.call_later(self.stream.deadline, self.stream.wake)  # a last frame's wait for room is over then

    def _source_reconnecting(self) -> None:
        metrics.RECONNECTS.labels(self.camera_id, "source").inc()
        if self.watcher is not None:
            self.watcher.source_reconnecting()

    async def _send_until_idle(self) -> None:
        await self._send_frames()
        await self.stream.wait_until_idle()

    def _nothing_more_to_send(self) -> bool:
        """A file's last frame waits for room (the tail being checked, a stream reopening: a one-image source
        ends before the uplink opens) for at most the stream's deadline, as a sent frame waits for its answer:
        a tail that is down does not hold an ended file. Stopped, the agent sends only what it has room for."""
        if not self.slot.closed:
            return False
        if self._stopped or not self.slot.pending:
            return True
        if self._feed_ended_at is None:  # the slot is closed, the feed's done-callback not yet run
            return False
        return asyncio.get_running_loop().time() >= self._feed_ended_at + self.stream.deadline

    async def _send_frames(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Room on the uplink, a frame, then our turn on the compute lane, and only then take the newest
            # frame: whatever arrived while we waited replaced older ones, so waiting never adds latency.
            if not await self.stream.wait_for_room(give_up=self._nothing_more_to_send):
                self._count_keep_latest_drops()  # the source ended or we were stopped, with no room to send
                return
            if not await self.slot.wait():  # the source ended (a file) or failed for good; run() says which
                self._count_keep_latest_drops()
                return
            async with self.lane:
                frame = self.slot.take()
                self._count_keep_latest_drops()
                if frame is None:
                    continue
                encoded = await loop.run_in_executor(self.compute, self.backend.encode, frame.image)
            stages = {"decode": frame.decode_seconds, **encoded.stage_seconds}
            message = tail_pb2.ActivationFrame(camera_id=self.camera_id, sequence=self.sequence,
                                               capture_time_unix_ns=int(frame.capture_time * 1e9),
                                               profile_fingerprint=self.backend.fingerprint,
                                               activation=encoded.tensor)
            self.sequence += 1
            if await self.stream.send(message, SentFrame(frame, encoded.letterbox, stages, encoded.tensor)):
                metrics.SENT_BYTES.labels(self.camera_id).inc(len(encoded.tensor.data))
            else:
                self._on_lost(1)

    def _on_answer(self, sent: SentFrame, answer: tail_pb2.Detections, round_trip: float) -> None:
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2, b.score] for b in answer.boxes], dtype=np.float32).reshape(-1, 5)
        boxes = sent.letterbox.boxes_to_frame(boxes)
        # Triton's answers carry no tail timings (batch size 0; Triton's own metrics have them): not recorded as 0
        timed = answer.timings.batch_size > 0
        tail_stages = {"tail_queue": answer.timings.queue_seconds,
                       "tail_compute": answer.timings.compute_seconds} if timed else {}
        stages = {**sent.stage_seconds, "uplink_round_trip": round_trip, **tail_stages,
                  "end_to_end": time.time() - sent.frame.capture_time}
        for stage, seconds in stages.items():
            self._stage(stage, seconds)
        metrics.FRAMES.labels(self.camera_id).inc()
        if timed:
            metrics.TAIL_BATCH.labels(self.camera_id).observe(answer.timings.batch_size)
        self.answered += 1
        height, width = sent.frame.image.shape[:2]
        result = FrameResult(self.camera_id, answer.sequence, sent.frame.index, sent.frame.capture_time,
                             width, height, boxes, {k: v * 1000 for k, v in stages.items()})
        self.sink.write(result)
        if self.watcher is not None:
            self.watcher.answered(result, sent.frame.image, sent.activation)
