"""Keep-latest handoff between a frame source and the (slower) pipeline behind it."""

from __future__ import annotations

import asyncio

from edge_agent.sources.base import Frame


class LatestFrameSlot:
    """Holds at most one pending frame: a new frame replaces an unconsumed one.

    A live camera does not wait for us, so when the pipeline is slower than the camera the right frame to
    process next is the newest one; queueing would only add latency and memory. Memory is bounded by
    construction (one frame). Use from the event loop's thread only.
    """

    def __init__(self) -> None:
        self._pending: Frame | None = None
        self._closed = False
        self._changed = asyncio.Event()
        self.dropped = 0  # frames replaced before anyone took them

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, frame: Frame) -> None:
        """Offer ``frame``, replacing (and counting as dropped) a pending one. Ignored once closed."""
        if self._closed:
            self.dropped += 1
            return
        if self._pending is not None:
            self.dropped += 1
        self._pending = frame
        self._changed.set()

    @property
    def pending(self) -> bool:
        return self._pending is not None

    async def wait(self) -> bool:
        """Until a frame is pending (True), or the slot is closed with nothing pending (False); takes nothing,
        so a consumer can wait for its turn to compute and then take whatever is newest by then."""
        while self._pending is None:
            if self._closed:
                return False
            self._changed.clear()
            await self._changed.wait()
        return True

    def take(self) -> Frame | None:
        """The pending frame, or None; never waits."""
        frame, self._pending = self._pending, None
        return frame

    async def get(self) -> Frame | None:
        """The pending frame, waiting for one if needed; None once closed and nothing is pending."""
        return self.take() if await self.wait() else None

    def close(self) -> None:
        """No more frames will come; a frame already pending is still handed out."""
        self._closed = True
        self._changed.set()
