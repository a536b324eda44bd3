"""Keep-latest: the one hand-off of frames between a producer and a (slower) consumer, wherever there is one.

It sits between a source's decode thread and the event loop (`AvSource`), and between a source and its
camera's pipeline (`feed`). A live camera does not wait for us, so when the consumer is slower than the
camera the right frame to process next is the newest one; queueing would only add latency and memory.
Like aiortc's ``MediaRelay(buffered=False)``: one slot and an event, and a newer frame replaces one not yet
taken; unlike it, every replacement is counted, since a drop nobody counts is a frame rate nobody sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from edge_agent.sources.base import Frame


class LatestFrameSlot:
    """Holds at most one pending frame: a new frame replaces an untaken one, and ``dropped`` counts it.

    The producer (any thread) calls `put`, `put_when_taken` and `close`; the consumer (one, on the event loop)
    `wait`, `take` and `get`, and may `close` too, to tell the producer it wants no more frames. Memory is
    bounded by construction: one frame.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()  # the producer may be a thread; its waits and wake-ups go through it
        self._pending: Frame | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._changed = asyncio.Event()
        # the consumer's loop and thread, known from its first wait: how a put from elsewhere wakes it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.dropped = 0  # frames replaced before anyone took them

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def put(self, frame: Frame) -> bool:
        """Offer ``frame``, replacing (and counting as dropped) a pending one. False once closed: the frame is
        not kept (nor counted: nothing was replaced), and the producer should stop."""
        with self._lock:
            if self._closed:
                return False
            if self._pending is not None:
                self.dropped += 1
            self._pending = frame
        self._wake_consumer()
        return True

    def put_when_taken(self, frame: Frame) -> bool:
        """`put` once the frame before has been taken: every frame kept (files). Blocks: not on the loop."""
        with self._lock:
            self._lock.wait_for(lambda: self._pending is None or self._closed)
        return self.put(frame)  # one producer: nothing can fill the slot in between

    def wait_closed(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds until the slot is closed (True): a producer's pause that a consumer
        leaving cuts short. Blocks: not on the loop."""
        with self._lock:
            return self._lock.wait_for(lambda: self._closed, timeout)

    def close(self, error: BaseException | None = None) -> None:
        """No more frames. From the producer, ``error`` says why the stream ended (raised to the consumer
        once the pending frame, which is still handed out, is taken). From the consumer: it wants no more."""
        with self._lock:
            if not self._closed:
                self._closed, self._error = True, error
            self._lock.notify_all()
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        loop = self._loop
        if loop is None:  # the consumer has not waited yet: its first wait() finds the frame itself
            return
        if threading.get_ident() == self._loop_thread:
            self._changed.set()
        else:  # asyncio.Event is not thread-safe: set it from its own loop
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(self._changed.set)

    async def wait(self) -> bool:
        """Until a frame is pending (True), or the slot is closed with nothing pending (False, or raises the
        error it was closed with); takes nothing, so a consumer can wait for its turn to compute and then take
        whatever is newest by then."""
        while True:
            with self._lock:
                if self._loop is None:
                    self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
                if self._pending is not None:
                    return True
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    return False
                self._changed.clear()  # under the lock: a put after this point sets it again
            await self._changed.wait()

    def take(self) -> Frame | None:
        """The pending frame, or None; never waits."""
        with self._lock:
            frame, self._pending = self._pending, None
            self._lock.notify_all()  # a producer in put_when_taken has room now
        return frame

    async def get(self) -> Frame | None:
        """The pending frame, waiting for one if needed; None once closed and nothing is pending."""
        return self.take() if await self.wait() else None
