"""What every frame source hands the agent, and the contract a source keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from facesplit.errors import FrostedError


# eq=False: frames compare by identity; a field-wise == on two images would be ambiguous (and slow).
@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One decoded picture."""

    image: np.ndarray  # H x W x 3 uint8, BGR, C-contiguous
    capture_time: float  # time.time() when the frame was decoded/received (wall clock, seconds)
    decode_seconds: float  # time spent demuxing+decoding+converting this frame (see each source for what counts)
    index: int  # per-source counter, 0-based, increasing across reconnects; a gap means frames were dropped


class SourceError(FrostedError):
    """A source that cannot work as configured (missing file, unsupported URL, no video stream).

    Retrying does not help, so ``feed`` lets it through instead of reconnecting.
    """


@runtime_checkable
class FrameSource(Protocol):
    url: str  # for logs: never contains credentials
    live: bool  # True: EOF is a disconnect (reconnect). False (files): EOF is the end.
    # Frames the source replaced in its own keep-latest hand-off before they were taken (over all connections);
    # the camera counts them with its own drops. 0 for a source that hands over every frame it makes.
    dropped: int

    def frames(self) -> AsyncIterator[Frame]:
        """One connection/session as an async generator.

        Ends on EOF or disconnect, raises on errors (ConnectionError, TimeoutError, ...), and releases
        everything it holds (threads, containers, remote sessions) when closed or cancelled. Iterate it
        under ``contextlib.aclosing`` (or call ``aclose()``): breaking out of ``async for`` alone leaves the
        cleanup to garbage collection.
        """
        ...
