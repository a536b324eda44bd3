"""The CloudTail gRPC service: one Detect stream per camera, answered in order, with a bounded window."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from cloud_tail import metrics
from cloud_tail.admission import (
    StreamActivity,
    StreamAdmission,
    StreamIdleError,
    next_or_idle,
    skip_first_message,
)
from cloud_tail.batcher import Batcher, BatchResult
from cloud_tail.limits import StreamLimits
from cloud_tail.models import ServedTail
from cloud_tail.validate import FrameRejectedError, StreamOrder, validate_frame
from frosted_wire.codec import WIRE_DTYPES
from frosted_wire.v1 import tail_pb2, tail_pb2_grpc

log = logging.getLogger("cloud_tail")


@dataclass(frozen=True)
class _Abort:
    """Ends the stream with this status, after the answers already queued before it."""

    code: grpc.StatusCode
    message: str


class CloudTailService(tail_pb2_grpc.CloudTailServicer):
    def __init__(self, tails: dict[str, ServedTail], batcher: Batcher, limits: StreamLimits,
                 peer_of: Callable[[str], str] = str) -> None:
        """``peer_of``: the client behind the peer gRPC names (the tail's gate relays every connection)."""
        self.tails = tails
        self.peer_of = peer_of
        self.batcher = batcher
        self.limits = limits
        self.draining = asyncio.Event()
        self.admission = StreamAdmission(limits.max_streams, limits.max_streams_per_connection,
                                         limits.max_streams_per_client)
        self._answer_queues: set[asyncio.Queue] = set()
        batcher.open_streams = lambda: len(self._answer_queues)

    def drain(self) -> None:
        """Stop reading new frames; each stream answers what it already read, then ends with UNAVAILABLE."""
        self.draining.set()
        for answers in self._answer_queues:
            answers.put_nowait(None)  # after the frames already queued: those are still answered

    async def GetInfo(  # noqa: N802 - the RPC's name, from proto/
            self, request: tail_pb2.GetInfoRequest, context: grpc.aio.ServicerContext) -> tail_pb2.TailInfo:
        profiles = [tail_pb2.ServedProfile(fingerprint=t.fingerprint, name=t.served_as, alpha=t.alpha, noisy=t.noisy,
                                           input_width=t.input_width, input_height=t.input_height,
                                           activation_shape=list(t.activation_shape))
                    for t in self.tails.values()]
        return tail_pb2.TailInfo(profiles=profiles, accepted_dtypes=list(WIRE_DTYPES.values()),
                                 max_message_bytes=self.limits.max_message_bytes,
                                 max_batch_size=self.batcher.max_batch,
                                 max_in_flight_per_stream=self.limits.max_in_flight,
                                 max_streams_per_connection=self.admission.max_per_connection,
                                 max_streams_per_client=self.admission.max_per_client)

    async def Detect(  # noqa: N802 - the RPC's name, from proto/
            self, requests: AsyncIterator[tail_pb2.ActivationFrame],
            context: grpc.aio.ServicerContext) -> AsyncIterator[tail_pb2.Detections]:
        # Reading runs ahead of answering by at most max_in_flight frames: a flooding client is held back by
        # HTTP/2 flow control on its own stream, and every other stream keeps its share of the batcher.
        window = asyncio.Semaphore(self.limits.max_in_flight)
        activity = StreamActivity()
        order = StreamOrder()
        answers: asyncio.Queue[tuple[int, asyncio.Task[BatchResult]] | _Abort | None] = asyncio.Queue()
        # this stream's frames in the batcher: cancelled when it ends, so a client that hangs up (or an agent that
        # gives up on a deadline and reconnects) leaves no frame behind for the tail to hold and compute
        submitted: set[asyncio.Task[BatchResult]] = set()

        async def read() -> None:
            frames = aiter(requests)
            try:
                while (frame := await next_or_idle(frames, activity, self.limits.idle_timeout_seconds)) is not None:
                    activity.received()
                    await window.acquire()
                    if self.draining.is_set():
                        break
                    try:
                        tail, activation = validate_frame(frame, self.tails)
                        order.follow(frame)
                    except FrameRejectedError as rejected:
                        metrics.FRAMES.labels(rejected.outcome).inc()
                        answers.put_nowait(_Abort(rejected.code, rejected.message))
                        return
                    metrics.FRAMES.labels("accepted").inc()
                    metrics.RECEIVED_BYTES.inc(len(frame.activation.data))
                    task = asyncio.create_task(self.batcher.submit(tail, activation, stream=window))
                    submitted.add(task)
                    task.add_done_callback(submitted.discard)
                    answers.put_nowait((frame.sequence, task))
            except StreamIdleError:
                # DEADLINE_EXCEEDED, not CANCELLED: the tail ended it on a time limit, the client cancelled nothing
                metrics.STREAMS_REFUSED.labels("idle").inc()
                answers.put_nowait(_Abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                          f"no frame for {self.limits.idle_timeout_seconds:g} s: the tail closed "
                                          "this idle stream; open a new one when frames flow"))
            except DecodeError:
                metrics.FRAMES.labels("invalid").inc()
                answers.put_nowait(_Abort(grpc.StatusCode.INVALID_ARGUMENT, "not a valid ActivationFrame message"))
            finally:
                answers.put_nowait(None)

        if self.draining.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "tail is shutting down; reconnect")
        connection = self.peer_of(context.peer())
        if (refusal := self.admission.admit(connection)) is not None:
            await skip_first_message(requests)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        metrics.STREAMS.inc()
        self._answer_queues.add(answers)
        reader = asyncio.create_task(read())
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, _Abort):
                    await context.abort(item.code, item.message)
                sequence, task = item
                try:
                    result = await task
                except Exception:
                    log.exception("tail computation failed")
                    await context.abort(grpc.StatusCode.INTERNAL, "tail computation failed")
                window.release()
                activity.answered()
                yield _detections(sequence, result)
            if self.draining.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "tail is shutting down; reconnect")
            await reader  # surfaces a broken request stream
        finally:
            reader.cancel()
            for task in list(submitted):
                task.cancel()
            self._answer_queues.discard(answers)
            self.admission.release(connection)
            metrics.STREAMS.dec()


def _detections(sequence: int, result: BatchResult) -> tail_pb2.Detections:
    boxes = [tail_pb2.Box(x1=float(b[0]), y1=float(b[1]), x2=float(b[2]), y2=float(b[3]), score=float(b[4]))
             for b in result.boxes]
    timings = tail_pb2.TailTimings(queue_seconds=result.queue_seconds, compute_seconds=result.compute_seconds,
                                   batch_size=result.batch_size)
    return tail_pb2.Detections(sequence=sequence, boxes=boxes, timings=timings)
