"""Dynamic batching across streams: frames that arrive within ``max_delay`` of each other (or while the
previous batch computes) run through the tail together, off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from cloud_tail import metrics
from cloud_tail.models import ServedTail


@dataclass(frozen=True)
class BatchResult:
    boxes: np.ndarray  # (N, 5) in model-input pixels
    queue_seconds: float
    compute_seconds: float
    batch_size: int


@dataclass
class _Pending:
    tail: ServedTail
    activation: np.ndarray | None  # None once its stream gave up on it: the frame is not kept, nor computed
    enqueued: float = field(default_factory=time.perf_counter)
    result: asyncio.Future[BatchResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """One compute lane: a single worker thread runs batches (torch uses all cores inside one batch).

    Frames wait per stream and batches take them one stream at a time, in turn: a camera's frame waits behind at
    most one frame of each other stream, not behind every frame a flooding client has in flight."""

    def __init__(self, executor: Executor, max_batch: int = 8, max_delay: float = 0.004,
                 open_streams: Callable[[], int] = lambda: 1 << 30) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.open_streams = open_streams
        self._waiting: dict[Hashable, deque[_Pending]] = {}  # by stream; the dict's order is whose turn is next
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tail-batcher")
        # read at each scrape, from the metrics server's thread: a racing count is off by a frame, never wrong long
        metrics.QUEUED_FRAMES.set_function(self.queued)

    def queued(self) -> int:
        """Frames waiting for a batch, of streams still open."""
        return sum(not pending.result.done() for frames in list(self._waiting.values()) for pending in list(frames))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, tail: ServedTail, activation: np.ndarray, stream: Hashable = None) -> BatchResult:
        """The frame's boxes. Bounded by the open streams' in-flight windows, since a stream that ends cancels
        what it submitted: cancelled, a frame waiting here is dropped at once (its memory too) and skipped."""
        pending = _Pending(tail, activation)
        self._waiting.setdefault(stream, deque()).append(pending)
        self._arrived.set()
        try:
            return await pending.result
        except asyncio.CancelledError:
            pending.activation = None
            raise

    def _take(self) -> _Pending | None:
        """The oldest frame still wanted of the stream whose turn it is, which then goes to the back."""
        while self._waiting:
            stream = next(iter(self._waiting))
            frames = self._waiting.pop(stream)
            pending = None
            while frames and pending is None:
                candidate = frames.popleft()
                if not candidate.result.done():  # else its stream ended: dropped
                    pending = candidate
            if frames:
                self._waiting[stream] = frames
            if pending is not None:
                return pending
        return None

    async def _next(self, timeout: float | None = None) -> _Pending:
        """The next frame still wanted (TimeoutError after ``timeout`` seconds without one)."""
        async with asyncio.timeout(timeout):
            while (pending := self._take()) is None:
                self._arrived.clear()
                await self._arrived.wait()
        return pending

    async def _collect(self) -> list[_Pending]:
        batch = [await self._next()]
        while len(batch) < self.max_batch and (pending := self._take()) is not None:  # what is already waiting
            batch.append(pending)
        deadline = time.perf_counter() + self.max_delay
        # Waiting only pays when another stream may still send: a lone camera never waits for a batch.
        while len(batch) < min(self.max_batch, self.open_streams()):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await self._next(remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            groups: dict[str, list[_Pending]] = defaultdict(list)
            for pending in batch:
                groups[pending.tail.fingerprint].append(pending)
            for waiting in groups.values():
                # a stream may have ended while the group before this one computed: its frames are dropped
                group = [p for p in waiting if p.activation is not None and not p.result.done()]
                if not group:
                    continue
                started = time.perf_counter()
                stacked = np.stack([p.activation for p in group])  # type: ignore[misc]
                try:
                    found = await loop.run_in_executor(self.executor, group[0].tail.detect_batch, stacked)
                except Exception as exc:  # a tail failure fails this batch's frames, not the server
                    for pending in group:
                        if not pending.result.done():
                            pending.result.set_exception(exc)
                    continue
                compute = time.perf_counter() - started
                metrics.BATCH_SIZE.observe(len(group))
                metrics.COMPUTE_SECONDS.observe(compute)
                for pending, boxes in zip(group, found, strict=True):
                    queued = started - pending.enqueued
                    metrics.QUEUE_SECONDS.observe(queued)
                    if not pending.result.done():
                        pending.result.set_result(BatchResult(boxes, queued, compute, len(group)))
