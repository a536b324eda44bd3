"""What the preview page shows, per camera: the latest answered frame (a reference, never a copy), its boxes,
counters and up/down state. The camera pipeline calls in on its own loop with O(1) work; the page pulls
snapshots, and pixels are encoded only for a connected page, at most ``fps`` times a second per camera."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.preview.render import RenderedFrame, render_frame
from edge_agent.sink import FrameResult
from frosted_wire.v1 import tail_pb2

if TYPE_CHECKING:
    from edge_agent.camera import CameraPipeline

# No frame for this long while the source has not reported a disconnect: the camera is stalled (a frozen
# camera is reported down by its source only after the read timeout).
STALE_SECONDS = 2.0
FPS_WINDOW_SECONDS = 3.0  # answered frames per second over this window


@dataclass(frozen=True)
class CameraCounts:
    """The pipeline's own counters, read when a snapshot is taken."""

    answered: int = 0
    dropped: int = 0  # replaced by newer frames before processing (keep-latest)
    lost: int = 0  # sent, but the uplink broke before an answer
    uplink_error: str | None = None  # the uplink's last error, if any


@dataclass(frozen=True)
class AnsweredFrame:
    result: FrameResult
    image: np.ndarray  # the frame the boxes are for, BGR, in the frame's own pixels
    activation: tail_pb2.Tensor  # what crossed the wire for it


@dataclass
class CameraView:
    """One camera's live state; implements `edge_agent.camera.CameraWatcher`."""

    camera_id: str
    counts: Callable[[], CameraCounts] = CameraCounts
    clock: Callable[[], float] = time.time  # wall clock, the clock of frames' capture times
    latest: AnsweredFrame | None = None
    source_reconnects: int = 0
    uplink_reconnects: int = 0
    encodes: int = 0  # frames rendered for the page: stays 0 while no page is connected
    # the newest frame known to have arrived (its capture time, or when keep-latest was seen dropping frames)
    _last_frame_at: float | None = field(default=None, init=False)
    _down_since: float | None = field(default=None, init=False)  # the source's last reported disconnect
    _last_answer_at: float | None = field(default=None, init=False)
    _uplink_down_since: float | None = field(default=None, init=False)  # the uplink's last stream reopening
    # answered + dropped at the last snapshot: frames arriving while none is answered (the uplink is down)
    _seen: int | None = field(default=None, init=False)
    _answer_times: deque[float] = field(default_factory=lambda: deque(maxlen=512), init=False)
    _rendered: RenderedFrame | None = field(default=None, init=False)
    _render_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    # --- called by the camera pipeline, on its loop: references and counters only -----------------------
    def answered(self, result: FrameResult, image: np.ndarray, activation: tail_pb2.Tensor) -> None:
        self.latest = AnsweredFrame(result, image, activation)
        now = self.clock()
        self._last_answer_at = now
        self._answer_times.append(now)
        self._last_frame_at = max(self._last_frame_at or 0.0, result.capture_time)

    def source_reconnecting(self) -> None:
        self.source_reconnects += 1
        self._down_since = self.clock()

    def uplink_reconnecting(self) -> None:
        self.uplink_reconnects += 1
        self._uplink_down_since = self.clock()

    # --- read by the page ----------------------------------------------------------------------------
    def _note_arrivals(self, counts: CameraCounts, now: float) -> None:
        # Frames dropped by keep-latest still prove the camera is sending (the uplink may be what is down).
        seen = counts.answered + counts.dropped
        if self._seen is not None and seen > self._seen:
            self._last_frame_at = max(self._last_frame_at or 0.0, now)
        self._seen = seen

    def status(self, now: float) -> tuple[str, str]:
        """(state, why): state is one of connecting, up, stalled, down."""
        if self._last_frame_at is None:
            if self._down_since is None:
                return "connecting", "no frame yet"
            return "down", f"no frame yet; reconnecting ({self.source_reconnects} attempts)"
        if self._down_since is not None and self._down_since >= self._last_frame_at:
            return "down", (f"disconnected {now - self._down_since:.0f} s ago; reconnecting "
                            f"({self.source_reconnects} reconnects so far)")
        age = now - self._last_frame_at
        if age > STALE_SECONDS:
            return "stalled", f"no frame for {age:.0f} s"
        return "up", "receiving frames"

    def uplink_state(self) -> str:
        """down from a broken stream (the tail gone, or stuck past the deadline) until an answer comes back;
        no timer: a slow head answering once every few seconds is not a down uplink."""
        answered = self._last_answer_at
        if self._uplink_down_since is not None and (answered is None or self._uplink_down_since >= answered):
            return "down"
        return "waiting" if answered is None else "up"

    def fps(self, now: float) -> float:
        recent = [t for t in self._answer_times if now - t <= FPS_WINDOW_SECONDS]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-6)

    def snapshot(self) -> dict[str, Any]:
        """The camera as JSON-ready values; the frame fields describe the newest answered frame (no pixels)."""
        now = self.clock()
        counts = self.counts()
        self._note_arrivals(counts, now)
        state, why = self.status(now)
        latest = self.latest
        return {
            "id": self.camera_id, "status": state, "status_detail": why,
            "uplink": self.uplink_state(), "uplink_error": counts.uplink_error,
            "fps": round(self.fps(now), 2), "answered": counts.answered,
            "dropped": {"keep_latest": counts.dropped, "uplink": counts.lost},
            "reconnects": {"source": self.source_reconnects, "uplink": self.uplink_reconnects},
            "frame": None if latest is None else frame_fields(latest),
            "latency_ms": None if latest is None else latest.result.latency_ms,
        }

    async def rendered(self, min_interval: float) -> RenderedFrame | None:
        """The newest answered frame as page images, re-encoded only when a newer frame exists and at least
        ``min_interval`` seconds have passed since the last encoding (shared by every connected page)."""
        async with self._render_lock:
            latest, cached = self.latest, self._rendered
            if latest is None:
                return None
            fresh = cached is not None and cached.sequence == latest.result.sequence
            if fresh or (cached is not None and time.monotonic() - cached.made_at < min_interval):
                return cached
            loop = asyncio.get_running_loop()
            # off the loop (cv2 releases the GIL): the cameras' pipelines share this loop
            self._rendered = await loop.run_in_executor(None, render_frame, frame_fields(latest), latest.image,
                                                        latest.activation)
            self.encodes += 1
            return self._rendered


def frame_fields(frame: AnsweredFrame) -> dict[str, Any]:
    """What the page needs beside the pixels: the boxes as the JSON lines have them, and the wire tensor."""
    record = frame.result.record()
    shape = list(frame.activation.shape)
    return {"sequence": record["sequence"], "frame_index": record["frame_index"], "width": record["width"],
            "height": record["height"], "capture_time": record["capture_time"], "boxes": record["boxes"],
            "wire": {"shape": shape, "dtype": tail_pb2.DType.Name(frame.activation.dtype).lower(),
                     "bytes": len(frame.activation.data)}}


class PreviewBoard:
    """Every camera's view, in config order."""

    def __init__(self, fps: float = 5.0) -> None:
        self.fps = fps  # page updates per second, and the most frames encoded per camera per second
        self.cameras: dict[str, CameraView] = {}
        self.clients = 0  # pages connected to the live stream

    def add_camera(self, camera_id: str, counts: Callable[[], CameraCounts] = CameraCounts) -> CameraView:
        view = CameraView(camera_id, counts)
        self.cameras[camera_id] = view
        return view

    def watch(self, pipeline: CameraPipeline) -> CameraView:
        """A view of ``pipeline``: its answered frames, its source's and its uplink's reconnects, its counters."""
        def counts() -> CameraCounts:
            return CameraCounts(pipeline.answered, pipeline.dropped, pipeline.lost, pipeline.stream.last_error)

        view = self.add_camera(pipeline.camera_id, counts)
        pipeline.watcher = view
        counted = pipeline.stream.on_reconnect  # the metrics' counter: keep it, and tell the view too

        def uplink_reconnecting() -> None:
            if counted is not None:
                counted()
            view.uplink_reconnecting()

        pipeline.stream.on_reconnect = uplink_reconnecting
        return view

    def snapshot(self) -> dict[str, Any]:
        return {"time": time.time(), "fps_limit": self.fps,
                "cameras": [view.snapshot() for view in self.cameras.values()]}

    @property
    def encodes(self) -> int:
        return sum(view.encodes for view in self.cameras.values())
