"""The uplink to the cloud tail: one channel per agent, one stream per camera.

Two parts. A **transport** opens a stream that takes frames and yields answers: our ``Detect`` stream
(`DetectTransport`), or KServe v2 to NVIDIA Triton (`edge_agent.triton_uplink.TritonTransport`). The **policy**
around any transport is `CameraStream`: each camera's stream carries at most ``window`` unanswered frames; a
frame unanswered after ``deadline`` means the tail is stuck, and the stream is torn down and reopened, with
backoff. Frames in flight on a broken stream are counted as lost, never resent: by the time a stream is back,
a newer frame is worth more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np

from edge_agent.sources import Backoff
from edge_agent.sources.backoff import worth_saying
from facesplit.errors import FrostedError
from frosted_wire.address import parse_tail_address
from frosted_wire.pem import read_pem
from frosted_wire.v1 import tail_pb2, tail_pb2_grpc

log = logging.getLogger("edge_agent.uplink")


@dataclass(frozen=True)
class ClientTls:
    ca: Path | None = None  # None: the system's trust store
    cert: Path | None = None  # with key: mutual TLS
    key: Path | None = None
    server_name: str | None = None  # override the name checked against the tail's certificate


def open_channel(address: str, tls: ClientTls | None, max_message_bytes: int = 1 << 20) -> grpc.aio.Channel:
    """``tls=None`` is plaintext; callers decide whether that was asked for explicitly."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's default reconnect backoff grows to 120 s; a camera feed wants the tail back within a second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=_pem(tls.ca, "ca"), private_key=_pem(tls.key, "key"),
                                               certificate_chain=_pem(tls.cert, "cert"))
    return grpc.aio.secure_channel(address, credentials, options=options)


class TlsFileError(FrostedError):
    """A TLS file checked when the config was read cannot be read now (removed, replaced by a FIFO since)."""


def _pem(path: Path | None, name: str) -> bytes | None:
    if path is None:
        return None
    try:
        return read_pem(path)
    except (OSError, ValueError) as exc:
        raise TlsFileError(f"tail.tls.{name} {path}: {getattr(exc, 'strerror', None) or exc}") from None


async def tail_info(channel: grpc.aio.Channel, timeout: float) -> tail_pb2.TailInfo:
    return await tail_pb2_grpc.CloudTailStub(channel).GetInfo(tail_pb2.GetInfoRequest(), timeout=timeout)


class UplinkError(Exception):
    """A stream the transport found broken in its own terms (a gRPC failure is `grpc.aio.AioRpcError`)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class TailRefusedError(FrostedError):
    """The tail refused this camera's frames as malformed or of a profile it does not serve: reopening the stream
    would only be refused again (a tail restarted with other profiles, an agent of another version)."""


# What the tail says of frames it will never take, however often the stream is reopened.
REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
MAX_PEER_TEXT = 300  # characters of a peer's error text kept: a tail could send megabytes of it


def peer_text(text: str) -> str:
    """A peer's error text as one short line: its own words, never a flood of them."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_PEER_TEXT else f"{text[:MAX_PEER_TEXT]}... ({len(text)} characters)"


def check_answer(answer: tail_pb2.Detections) -> None:
    """Refuse an answer no tail of ours gives (a coordinate not finite, a score outside [0, 1]): written out, it
    would be a JSON line no parser takes, or a box no one should trust. An UplinkError, so the stream reopens."""
    if not answer.boxes:
        return
    values = np.array([[b.x1, b.y1, b.x2, b.y2, b.score] for b in answer.boxes], dtype=np.float64)
    if not np.isfinite(values).all():
        raise UplinkError(grpc.StatusCode.DATA_LOSS, f"the answer to frame {answer.sequence} has a box that is "
                                                     "not finite; the tail is broken")
    if ((values[:, 4] < 0) | (values[:, 4] > 1)).any():
        raise UplinkError(grpc.StatusCode.DATA_LOSS, f"the answer to frame {answer.sequence} has a score outside "
                                                     "[0, 1]; the tail is broken")


class UplinkSession(Protocol):
    """One open stream: frames in, answers out (in any order; each names its frame's sequence)."""

    async def write(self, frame: tail_pb2.ActivationFrame) -> None:
        """Raises grpc.aio errors, `UplinkError` or CancelledError when the stream is broken."""
        ...

    async def read(self) -> tail_pb2.Detections | None:
        """The next answer; None when the tail ended the stream cleanly. Raises like `write`."""
        ...

    def cancel(self) -> None: ...


class UplinkTransport(Protocol):
    """What carries frames to a tail; `CameraStream` owns the window, deadlines and reconnects around it."""

    address: str  # for messages

    async def wait_ready(self) -> None:
        """Return once the connection is up (callers bound the wait)."""
        ...

    async def describe(self, timeout: float) -> tail_pb2.TailInfo:
        """What the tail serves, for the agent's check before it streams; raises grpc.aio.AioRpcError."""
        ...

    def open(self, camera_id: str) -> UplinkSession: ...

    async def close(self) -> None: ...


class DetectSession:
    """Our tail's bidirectional ``Detect`` stream."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call

    async def write(self, frame: tail_pb2.ActivationFrame) -> None:
        await self.call.write(frame)

    async def read(self) -> tail_pb2.Detections | None:
        answer = await self.call.read()
        return None if answer is grpc.aio.EOF else answer

    def cancel(self) -> None:
        self.call.cancel()


class DetectTransport:
    """Frames to `frosted tail` over our wire contract (``frosted_wire.v1``)."""

    def __init__(self, channel: grpc.aio.Channel, address: str = "") -> None:
        self.channel = channel
        self.address = address
        self.stub = tail_pb2_grpc.CloudTailStub(channel)

    async def wait_ready(self) -> None:
        await self.channel.channel_ready()

    async def describe(self, timeout: float) -> tail_pb2.TailInfo:
        return await tail_info(self.channel, timeout)

    def open(self, camera_id: str) -> DetectSession:
        return DetectSession(self.stub.Detect())

    async def close(self) -> None:
        await self.channel.close()


def open_transport(address: str, tls: ClientTls | None, model: Callable[[], str] | None = None) -> UplinkTransport:
    """The transport ``address`` names: ``HOST:PORT``, our tail; ``triton://HOST:PORT[/MODEL]``, Triton (the
    model named in the address, else ``model()``: the one named after the agent's profile)."""
    parsed = parse_tail_address(address)
    if not parsed.triton:
        return DetectTransport(open_channel(parsed.target, tls), address)
    from edge_agent.triton_uplink import TritonTransport  # only an agent that talks to Triton needs its stubs

    name = parsed.model or (model() if model is not None else None)
    if name is None:
        raise ValueError(f"{address}: name the Triton model (triton://HOST:PORT/MODEL)")
    return TritonTransport(open_channel(parsed.target, tls), address, name)


@dataclass
class InFlight:
    context: Any  # what the caller needs back with the answer
    sent: float  # perf_counter at write


AnswerHandler = Callable[[Any, tail_pb2.Detections, float], None]  # (context, detections, round trip seconds)


class CameraStream:
    """Keeps one camera's stream open on any transport; ``await wait_for_room()`` then ``await send()``."""

    def __init__(self, transport: UplinkTransport | grpc.aio.Channel, camera_id: str,
                 on_answer: AnswerHandler | None = None, *, window: int = 4,
                 deadline: float = 2.0, backoff: Backoff | None = None,
                 on_lost: Callable[[int], None] | None = None, on_reconnect: Callable[[], None] | None = None,
                 ready: asyncio.Event | None = None) -> None:
        # a bare channel: our Detect stream on it
        self.transport = DetectTransport(transport) if isinstance(transport, grpc.aio.Channel) else transport
        self.camera_id = camera_id
        self.on_answer = on_answer
        self.window = window
        self.deadline = deadline
        self.backoff = backoff or Backoff()
        self.on_lost = on_lost
        self.on_reconnect = on_reconnect
        self.ready = ready  # set: the stream may open (the agent checked that the tail serves it)
        self._call: UplinkSession | None = None
        self._in_flight: dict[int, InFlight] = {}
        self._changed = asyncio.Condition()
        self._wakers: set[asyncio.Task[None]] = set()
        self.last_error: str | None = None
        self._endings = 0  # streams ended by an error since the last one that was answered

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def _has_room(self) -> bool:
        return self._call is not None and len(self._in_flight) < self.window

    async def wait_for_room(self, give_up: Callable[[], bool] | None = None) -> bool:
        """True once a frame may be sent; False as soon as ``give_up()`` holds without room (it is checked
        whenever the stream changes and on `wake`), so a caller whose source ended is not held by a tail
        that never comes up."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._has_room() or (give_up is not None and give_up()))
            return self._has_room()

    def wake(self) -> None:
        """Make waiters re-check their ``give_up`` condition (callable from plain callbacks on the loop)."""
        task = asyncio.get_running_loop().create_task(self._notify())
        self._wakers.add(task)  # the loop holds tasks weakly: keep it until it ran
        task.add_done_callback(self._wakers.discard)

    async def wait_until_idle(self) -> None:
        """Every sent frame answered (or lost): used when a file source ends."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._in_flight)

    async def send(self, frame: tail_pb2.ActivationFrame, context: Any) -> bool:
        """Write one frame; False if the stream broke (the frame is lost, the stream will reopen)."""
        call = self._call
        if call is None:
            return False
        self._in_flight[frame.sequence] = InFlight(context, time.perf_counter())
        written = await self._write(call, frame)
        if not written:
            self._in_flight.pop(frame.sequence, None)  # the caller counts it lost, not the stream's reset
        return written

    async def _write(self, call: UplinkSession, frame: tail_pb2.ActivationFrame) -> bool:
        try:
            # bounded: grpc.aio's write() can wait forever on a call cancelled before it started
            async with asyncio.timeout(self.deadline):
                await call.write(frame)
            return True
        except TimeoutError:
            self.last_error = f"could not write a frame within {self.deadline:g} s"
            call.cancel()
            return False
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            return False  # grpc.aio raises CancelledError from write() on a call the watchdog cancelled
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, UplinkError) as exc:
            self.last_error = peer_text(str(exc))
            call.cancel()
            return False

    async def run(self) -> None:
        """Open, serve, and reopen the stream until cancelled."""
        if self.ready is not None:
            await self.ready.wait()
        while True:
            # Open a stream only on a READY channel: a stream opened while the tail is down can stay stuck
            # in grpc.aio's call setup after the tail returns.
            try:
                async with asyncio.timeout(self.deadline):
                    await self.transport.wait_ready()
            except TimeoutError:
                self.last_error = f"tail not reachable within {self.deadline:g} s"
                await asyncio.sleep(self.backoff.next_delay())
                continue
            call = self.transport.open(self.camera_id)
            watchdog = asyncio.create_task(self._watch(call))
            answered = 0
            ended = False
            try:
                async with self._changed:
                    self._call = call
                    self._changed.notify_all()
                while (answer := await call.read()) is not None:
                    check_answer(answer)
                    answered += 1
                    self._answer(answer)
                    if answered == 1:
                        self.backoff.reset()
                        self._endings = 0
            except (grpc.aio.AioRpcError, UplinkError) as exc:
                code, details = (exc.code, exc.details) if isinstance(exc, UplinkError) else (exc.code(),
                                                                                             exc.details())
                self.last_error = f"{code.name}: {peer_text(details or '')}"
                if code in REFUSALS:
                    raise TailRefusedError(f"camera {self.camera_id}: the tail refuses its frames "
                                           f"({self.last_error})") from None
                ended = True
            except asyncio.CancelledError:
                if _being_cancelled():
                    raise
                # grpc.aio raises CancelledError from read() when the watchdog cancelled the call
            finally:
                watchdog.cancel()
                call.cancel()
                await self._reset()
            if ended:
                self._endings += 1
                if worth_saying(self._endings):
                    log.warning("camera %s: uplink stream ended: %s (%d in a row)", self.camera_id,
                                self.last_error, self._endings)
            if self.on_reconnect is not None:
                self.on_reconnect()
            await asyncio.sleep(self.backoff.next_delay())

    def _answer(self, answer: tail_pb2.Detections) -> None:
        sent = self._in_flight.pop(answer.sequence, None)
        if sent is None:
            return  # an answer to a frame already given up on
        if self.on_answer is not None:
            self.on_answer(sent.context, answer, time.perf_counter() - sent.sent)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _reset(self) -> None:
        async with self._changed:
            lost = len(self._in_flight)
            self._in_flight.clear()
            self._call = None
            self._changed.notify_all()
        if lost and self.on_lost is not None:
            self.on_lost(lost)

    async def _watch(self, call: UplinkSession) -> None:
        """Cancel a stream whose oldest unanswered frame is older than the deadline (a stuck tail)."""
        while True:
            await asyncio.sleep(min(0.25, self.deadline / 4))
            if self._in_flight:
                oldest = min(f.sent for f in self._in_flight.values())
                if time.perf_counter() - oldest > self.deadline:
                    self.last_error = f"no answer within {self.deadline:g} s"
                    log.warning("camera %s: %s; reopening the stream", self.camera_id, self.last_error)
                    call.cancel()
                    return


def _being_cancelled() -> bool:
    """True when the running task itself is being cancelled, not merely a gRPC call it was using."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
