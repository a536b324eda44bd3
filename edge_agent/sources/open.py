"""Turn a source URL from the config into a frame source."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge_agent.sources.av_source import LOW_LATENCY_OPTIONS, AvSource
from edge_agent.sources.base import FrameSource, SourceError
from edge_agent.sources.whep import WhepSource
from facesplit.urls import redact_url

SUPPORTED = (
    "rtsp://, rtsps://, whep://, wheps:// (or whep+http://, whep+https://), http(s)://, "
    "/dev/videoN, v4l2:///dev/videoN, file://PATH or a file path"
)
_WHEP_SCHEMES = {"whep": "http", "whep+http": "http", "wheps": "https", "whep+https": "https"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_source(
    url: str, *, realtime_files: bool = False, open_timeout: float = 5.0, read_timeout: float = 3.0
) -> FrameSource:
    """The frame source for ``url``; raises SourceError for an unsupported URL or a missing file/device.

    ``realtime_files`` paces video files at their frame rate, like a camera (otherwise as fast as decoded).
    """
    timeouts = {"open_timeout": open_timeout, "read_timeout": read_timeout}
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""

    if scheme in ("rtsp", "rtsps"):
        # TCP: interleaved RTP survives NAT and loss-free links; UDP drops whole frames under load.
        return AvSource(url, live=True, options={"rtsp_transport": "tcp", **LOW_LATENCY_OPTIONS}, **timeouts)
    if scheme in _WHEP_SCHEMES:
        return WhepSource(_WHEP_SCHEMES[scheme] + url[len(scheme) :], **timeouts)
    if scheme in ("http", "https"):  # HLS, MJPEG, ... anything FFmpeg reads over HTTP
        return AvSource(url, live=True, options=dict(LOW_LATENCY_OPTIONS), **timeouts)
    if scheme == "v4l2" or (not scheme and url.startswith("/dev/video")):
        device = unquote(urlsplit(url).path) if scheme else url
        if not _exists(Path(device), Path.exists):
            raise SourceError(f"video device not found: {_shortened(device)}")
        return AvSource(device, live=True, format="v4l2", options={}, **timeouts)
    if scheme == "file" or not scheme:
        path = _file_path(url) if scheme else url
        if not _exists(Path(path), Path.is_file):
            raise SourceError(f"video file not found: {_shortened(path)}")
        return AvSource(path, live=False, realtime=realtime_files, options={}, **timeouts)
    raise SourceError(f"unsupported video source {redact_url(url)!r}: expected {SUPPORTED}")


def _exists(path: Path, test: Callable[[Path], bool]) -> bool:
    try:
        return test(path)
    except OSError:  # a name too long for the filesystem, say: no such file either
        return False


def _shortened(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    # file:///abs/path has an empty host; accept the common file://relative/path too.
    host = "" if parts.netloc in ("", "localhost") else parts.netloc
    return unquote(host + parts.path)
