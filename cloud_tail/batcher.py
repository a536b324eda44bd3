"""Dynamic batching across streams: frames that arrive within ``max_delay`` of each other (or while the
previous batch computes) run through the tail together, off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
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
    activation: np.ndarray
    enqueued: float = field(default_factory=time.perf_counter)
    result: asyncio.Future[BatchResult] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Batcher:
    """One compute lane: a single worker thread runs batches (torch uses all cores inside one batch)."""

    def __init__(self, executor: Executor, max_batch: int = 8, max_delay: float = 0.004,
                 open_streams: Callable[[], int] = lambda: 1 << 30) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.open_streams = open_streams
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tail-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, tail: ServedTail, activation: np.ndarray) -> BatchResult:
        pending = _Pending(tail, activation)
        self._queue.put_nowait(pending)  # bounded by the streams' in-flight windows, not here
        return await pending.result

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch and not self._queue.empty():  # whatever is already waiting
            batch.append(self._queue.get_nowait())
        deadline = time.perf_counter() + self.max_delay
        # Waiting only pays when another stream may still send: a lone camera never waits for a batch.
        while len(batch) < min(self.max_batch, self.open_streams()):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._collect() if not p.result.done()]  # skip cancelled streams' frames
            groups: dict[str, list[_Pending]] = defaultdict(list)
            for pending in batch:
                groups[pending.tail.fingerprint].append(pending)
            for group in groups.values():
                started = time.perf_counter()
                stacked = np.stack([p.activation for p in group])
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
