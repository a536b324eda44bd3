"""Frame sources for the edge agent: files, RTSP, WHEP (WebRTC) and capture devices.

``open_source(url)`` picks the source; ``feed(source, slot)`` keeps a ``LatestFrameSlot`` filled with the
newest frame and reconnects live sources.
"""

from __future__ import annotations

from edge_agent.sources.backoff import Backoff
from edge_agent.sources.base import Frame, FrameSource, SourceError
from edge_agent.sources.feed import feed
from edge_agent.sources.latest import LatestFrameSlot
from edge_agent.sources.open import open_source

__all__ = ["Backoff", "Frame", "FrameSource", "LatestFrameSlot", "SourceError", "feed", "open_source"]
