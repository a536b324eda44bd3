"""Frames through PyAV (FFmpeg): video files, RTSP cameras, HTTP streams and local capture devices.

PyAV blocks, so each connection gets its own daemon thread that opens, demuxes, decodes and converts; the
async generator only waits on a one-frame handoff (the agent's one keep-latest slot, `LatestFrameSlot`). A
daemon thread rather than ``asyncio.to_thread``: a thread stuck in FFmpeg on a frozen camera must not hold up
the executor's shutdown at interpreter exit.

Behaviours of FFmpeg's RTSP demuxer this module relies on (measured against gst-rtsp-server):
- a server that dies (SIGKILL) ends ``demux`` with a plain EOF, no exception: on a live source EOF is a
  disconnect, and the generator just ends so ``feed`` reconnects;
- a server that freezes (SIGSTOP) trips PyAV's read timeout, but the H.264 parser then flushes the frame
  it held back, which restarts the timer: the thread only gives up after about twice the read timeout. The
  async side therefore keeps its own watchdog of ``read_timeout`` between frames and leaves the thread
  (told to stop) to finish on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import av.error
import numpy as np

from edge_agent.sources.base import Frame, SourceError
from edge_agent.sources.latest import LatestFrameSlot
from facesplit.images import frames_too_large, max_image_pixels
from facesplit.urls import redact_url

log = logging.getLogger("edge_agent.sources")

# Live sources: stop probing the stream after its first packets instead of FFmpeg's default ~2 s of
# frames (measured on RTSP: open 1.97 s -> 0.17 s, and no burst of 2 s old frames after it).
# ``analyzeduration`` is explicit because 0 means "default" (5 s) to FFmpeg. Deliberately NOT
# ``fflags=nobuffer``: it discards the packets read while probing, i.e. the first key frame on RTSP (the
# decoder then waits a whole GOP) and, measured, half the frames of an HLS clip.
LOW_LATENCY_OPTIONS = {"flags": "low_delay", "analyzeduration": "100000", "probesize": "32768"}

# How long closing the generator waits for the decode thread before leaving it to exit on its own (it is
# told to stop; a thread blocked in FFmpeg exits at the latest when its open/read timeout fires).
_THREAD_JOIN_SECONDS = 1.0


class AvSource:
    """A PyAV source: ``frames()`` is one connection (one ``av.open``) read by a dedicated thread."""

    def __init__(
        self,
        url: str,
        *,
        live: bool,
        options: dict[str, str] | None = None,
        format: str | None = None,  # the name av.open uses
        open_timeout: float = 5.0,
        read_timeout: float = 3.0,
        realtime: bool = False,
    ) -> None:
        self._target = url  # may hold credentials: never log it
        self.url = redact_url(url)
        self.live = live
        self.options = dict(options or {})
        self.format = format
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.realtime = realtime
        self.max_pixels = max_image_pixels()  # a bad $FROSTED_MAX_IMAGE_PIXELS is one line before the model loads
        self._indices = itertools.count()  # shared by all connections: indices grow across reconnects
        self._handoffs: set[LatestFrameSlot] = set()  # the open connections' slots
        self._dropped_closed = 0  # frames replaced in the slots of connections already closed

    @property
    def dropped(self) -> int:
        """Frames the decode threads replaced before the loop took them (live and paced sources), over every
        connection so far; the camera's pipeline adds them to its own keep-latest drops."""
        return self._dropped_closed + sum(slot.dropped for slot in self._handoffs)

    def __repr__(self) -> str:
        return f"AvSource({self.url!r}, live={self.live})"

    async def frames(self) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        # Paced sources behave like cameras: drop rather than fall behind. Plain files keep every frame.
        handoff = LatestFrameSlot()
        self._handoffs.add(handoff)
        hand_over = handoff.put if self.live or self.realtime else handoff.put_when_taken
        done = loop.create_future()

        def mark_done() -> None:
            if not done.done():
                done.set_result(None)

        def run() -> None:
            try:
                self._read(handoff, hand_over)
            except BaseException as exc:
                handoff.close(exc)
            else:
                handoff.close()
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(mark_done)

        thread = threading.Thread(target=run, name=f"av-source {self.url}", daemon=True)
        thread.start()
        try:
            # Watchdog for live sources (see the module docstring): the first frame may take the whole open.
            timeout: float | None = self.open_timeout + self.read_timeout if self.live else None
            while True:
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancel
                        frame = await handoff.get()  # raises what the thread raised
                except TimeoutError:
                    raise TimeoutError(f"no frame from {self.url} for {timeout:.1f} s") from None
                if frame is None:
                    return
                yield frame
                timeout = self.read_timeout if self.live else None
        finally:
            handoff.close()  # the thread quits at its next frame or check; a closed slot replaces nothing more
            self._handoffs.discard(handoff)
            self._dropped_closed += handoff.dropped
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_THREAD_JOIN_SECONDS):
                    await asyncio.shield(done)
            if not done.done():
                log.debug("decode thread for %s still blocked in FFmpeg; it exits at its timeout", self.url)

    # -- the decode thread
    def _read(self, handoff: LatestFrameSlot, hand_over: Callable[[Frame], bool]) -> None:
        container = self._open()
        try:
            if not container.streams.video:
                raise SourceError(f"no video stream in {self.url}")
            stream = container.streams.video[0]
            self._check_size(stream.codec_context.width, stream.codec_context.height)  # from the headers
            if not self.live:
                # Frame threads add a few frames of latency: fine for files, not for cameras.
                stream.thread_type = "AUTO"
            self._decode(container, stream, handoff, hand_over)
        except av.error.FFmpegError as exc:
            raise self._translate(exc) from None
        finally:
            container.close()

    def _open(self) -> av.container.InputContainer:
        started = time.monotonic()
        try:
            return av.open(
                self._target,
                mode="r",
                format=self.format,
                options=self.options,
                timeout=(self.open_timeout, self.read_timeout),
            )
        except av.error.FFmpegError as exc:
            if self.live and time.monotonic() - started >= self.open_timeout:
                # a server that accepts and says nothing: FFmpeg's words after its timeout are "Invalid data"
                # (a ConnectionError: a TimeoutError from the thread would read as the watchdog's own)
                raise ConnectionError(f"{self.url}: no answer within the {self.open_timeout:g} s open timeout "
                                   f"({exc.strerror or type(exc).__name__})") from None
            raise self._translate(exc) from None

    def _decode(self, container: Any, stream: Any, handoff: LatestFrameSlot,
                hand_over: Callable[[Frame], bool]) -> None:
        pacer = _Pacer(stream) if self.realtime and not self.live else None
        started = time.perf_counter()
        for packet in container.demux(stream):
            if handoff.closed:  # the consumer has gone
                return
            if self.live:
                # Live demux time is mostly waiting for the camera, not work: count from the packet on.
                started = time.perf_counter()
            for av_frame in packet.decode():
                self._check_size(av_frame.width, av_frame.height)  # a stream may change size mid-way
                image = np.ascontiguousarray(av_frame.to_ndarray(format="bgr24"))
                now = time.perf_counter()
                if pacer is not None and not pacer.wait(av_frame, handoff):
                    return
                frame = Frame(image, time.time(), now - started, next(self._indices))
                if not hand_over(frame):
                    return
                started = time.perf_counter()

    def _check_size(self, width: int, height: int) -> None:
        """A file's frames too large end it (they will not shrink); a camera's are a disconnect, retried with
        backoff, so one misconfigured camera does not stop the others, and heals when it is put right."""
        if (reason := frames_too_large(self.url, width, height, self.max_pixels)) is not None:
            raise ConnectionError(reason) if self.live else SourceError(reason)

    def _translate(self, exc: av.error.FFmpegError) -> Exception:
        """An FFmpeg error as an exception whose message names the source without credentials.

        PyAV puts the full URL (user:password included) into its messages, so they are rebuilt from errno.
        """
        reason = exc.strerror or type(exc).__name__
        if not self.live:
            # A file that FFmpeg cannot read will not get better by retrying.
            return SourceError(f"cannot read video file {self.url}: {reason}")
        if isinstance(exc, av.error.ExitError):  # PyAV's interrupt callback: our open/read timeout fired
            return TimeoutError(f"{self.url}: timed out ({reason})")
        return ConnectionError(f"{self.url}: {reason}")


PACER_RESYNC_SECONDS = 2.0  # a file frame this far from when its timestamp says: the timestamps jumped


class _Pacer:
    """Releases file frames at their presentation times, like a camera would."""

    def __init__(self, stream: Any) -> None:
        rate = stream.average_rate or stream.guessed_rate
        self._period = float(1 / rate) if rate else 1 / 25
        self._first_pts: float | None = None
        self._start = 0.0
        self._count = 0

    def wait(self, av_frame: Any, handoff: LatestFrameSlot) -> bool:
        """Sleep until ``av_frame`` is due; False when the consumer closed ``handoff`` meanwhile."""
        pts = av_frame.time if av_frame.time is not None else self._count * self._period
        self._count += 1
        now = time.monotonic()
        due = None if self._first_pts is None else self._start + (pts - self._first_pts)
        # the clock restarts where the timestamps do (recordings joined end to end start again at 0) or jump
        # ahead: else every later frame is overdue at once, released in a burst and dropped by keep-latest
        if due is None or due < now - PACER_RESYNC_SECONDS or due > now + PACER_RESYNC_SECONDS:
            self._first_pts, self._start, due = pts, now, now
        delay = due - now
        return not (delay > 0 and handoff.wait_closed(delay))
