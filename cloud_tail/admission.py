"""Which Detect streams the tail takes on, and when it gives up on a silent one.

Every open stream can hold ``max_in_flight`` decoded frames and its HTTP/2 buffers, so without a cap a
client (or a few) opening streams grows the tail without bound; a stream that never sends would hold its
share forever. Both limits end the stream with a gRPC status the agent's reconnect loop already handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from cloud_tail import metrics

T = TypeVar("T")


class StreamAdmission:
    """Counts open Detect streams, in total, per connection (gRPC's peer string: address and port) and per client
    (the address alone: however many connections a client opens)."""

    def __init__(self, max_streams: int, max_per_connection: int, max_per_client: int | None = None) -> None:
        self.max_streams = max_streams
        self.max_per_connection = max_per_connection
        self.max_per_client = max_per_client or max_streams
        self._per_connection: Counter[str] = Counter()
        self._per_client: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._per_connection.total()

    def admit(self, connection: str) -> str | None:
        """Take a slot for a new stream on ``connection``; if there is none, the reason (and the stream is
        not counted). Everything runs on the event loop, so no lock is needed."""
        client = client_of(connection)
        if self.open >= self.max_streams:
            metrics.STREAMS_REFUSED.labels("max_streams").inc()
            return f"the tail serves at most {self.max_streams} streams at once (its --max-streams); retry later"
        if self._per_connection[connection] >= self.max_per_connection:
            metrics.STREAMS_REFUSED.labels("max_streams_per_connection").inc()
            return (f"at most {self.max_per_connection} streams per connection (the tail's "
                    "--max-streams-per-connection; an agent opens one per camera)")
        if self._per_client[client] >= self.max_per_client:
            metrics.STREAMS_REFUSED.labels("max_streams_per_client").inc()
            return (f"at most {self.max_per_client} streams per client address ({client}), whatever its "
                    "connections (the tail's --max-streams-per-client): it keeps the rest for other clients")
        self._per_connection[connection] += 1
        self._per_client[client] += 1
        return None

    def release(self, connection: str) -> None:
        for counts, key in ((self._per_connection, connection), (self._per_client, client_of(connection))):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]


def client_of(peer: str) -> str:
    """The client's address in gRPC's peer string ("ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7"; a unix socket's
    peer has no port and is its own client)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


# How long a refused stream is read (and what it sends dropped) before the refusal.
REFUSAL_READ_SECONDS = 1.0


async def skip_first_message(frames: AsyncIterator[object]) -> None:
    """Read and drop what a refused stream sends in its first second (or until it half-closes). Refusing while
    the client is still writing makes grpc's Python client fail that write and report its own INTERNAL "Internal
    error from Core" in place of our RESOURCE_EXHAUSTED; a client that writes frame after frame at once (an
    agent, a flood) would hit that on its second write if only the first were read."""
    with contextlib.suppress(Exception):  # the stream is refused whatever this read does
        async with asyncio.timeout(REFUSAL_READ_SECONDS):
            async for _ in aiter(frames):
                pass


class StreamIdleError(Exception):
    """The stream sent no frame for ``idle_timeout_seconds`` while none of its frames was in the tail."""


@dataclass
class StreamActivity:
    """When a stream last did something. A client waiting for its answers is not idle, so the idle clock runs
    only while none of its frames is in the tail."""

    in_flight: int = 0
    quiet_since: float = field(default_factory=time.monotonic)

    def received(self) -> None:
        self.in_flight += 1
        self.quiet_since = time.monotonic()

    def answered(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.quiet_since = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.in_flight else time.monotonic() - self.quiet_since


async def next_or_idle(frames: AsyncIterator[T], activity: StreamActivity, idle_timeout_seconds: float) -> T | None:
    """The stream's next message, None at its end, or StreamIdleError once it has been idle for too long."""

    async def receive() -> T | None:
        try:
            return await anext(frames)
        except StopAsyncIteration:
            return None

    pending = asyncio.ensure_future(receive())
    try:
        # Waiting on the task, not wait_for on the iterator: a timeout must not cancel a read in progress
        # while the stream is still allowed to live (its frames are in the tail).
        while not pending.done():
            remaining = idle_timeout_seconds - activity.idle_for()
            if remaining <= 0:
                raise StreamIdleError
            await asyncio.wait({pending}, timeout=remaining)
        return pending.result()
    finally:
        pending.cancel()
