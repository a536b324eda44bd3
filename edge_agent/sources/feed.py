"""Keep a slot filled with the newest frame from a source, reconnecting live sources forever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from edge_agent.sources.backoff import Backoff, worth_saying
from edge_agent.sources.base import Frame, FrameSource, SourceError
from edge_agent.sources.latest import LatestFrameSlot

log = logging.getLogger("edge_agent.sources")

# While a source stays down, log the first failed attempt and then every Nth, not every backoff step.


async def feed(
    source: FrameSource,
    slot: LatestFrameSlot,
    *,
    backoff: Backoff | None = None,
    on_reconnect: Callable[[], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Read ``source`` into ``slot`` until the source ends for good; closes ``slot`` on the way out.

    Live sources: a connection that ends (EOF is a disconnect) or fails is retried after a backoff delay,
    forever; ``on_error`` sees each failure, ``on_reconnect`` is called before each retry. Files: the end
    of the file closes the slot and returns; an error reading it is raised after ``on_error``.

    SourceError always propagates, on the first connection or later: it means the configuration is wrong
    (missing file, no video stream, unsupported URL) and retrying cannot fix it. Cancellation propagates.
    """
    backoff = backoff or Backoff()
    failures = 0  # consecutive connections that ended or failed
    try:
        while True:
            got_frame = False
            reason: str
            try:
                frames = source.frames()
                try:
                    async for frame in frames:
                        if not got_frame:
                            got_frame = True
                            backoff.reset()
                            if failures:
                                log.warning("%s: frames again after %d failed attempt(s)", source.url, failures)
                            failures = 0
                        slot.put(frame)
                finally:
                    await _close(frames)
                reason = "stream ended"
            except SourceError:
                raise
            except Exception as exc:
                if on_error is not None:
                    on_error(exc)
                if not source.live:
                    raise
                reason = f"{type(exc).__name__}: {exc}"
            if not source.live:
                return

            failures += 1
            if worth_saying(failures):
                log.warning("%s: disconnected (%s), reconnecting (attempt %d)", source.url, reason, failures)
            if on_reconnect is not None:
                on_reconnect()
            await asyncio.sleep(backoff.next_delay())
    finally:
        slot.close()  # whatever ended the feed, a consumer waiting in slot.get() must wake up



async def _close(frames: AsyncIterator[Frame]) -> None:
    """Release the connection now rather than whenever the generator happens to be collected."""
    aclose = getattr(frames, "aclose", None)
    if aclose is not None:
        await aclose()
