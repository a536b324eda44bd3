"""The preview page over HTTP (aiohttp, on the agent's loop): the page and its assets, `/api/state` (JSON, no
pixels) and `/api/events` (Server-Sent Events: a snapshot every 1/fps seconds, with a camera's frame and
activation images only when they changed since that page's last event, so image and boxes always arrive
together). It serves raw frames: loopback by default, never on the cloud side."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from edge_agent.preview.board import PreviewBoard
from facesplit.errors import FrostedError

log = logging.getLogger("edge_agent.preview")

STATIC = Path(__file__).with_name("static")


class PreviewError(FrostedError):
    """The preview page cannot listen where the config says."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MalformedRequestLog(logging.Filter):
    """aiohttp logs each request it cannot parse (a 20 kB URL, a NUL in the path) at ERROR with a traceback: a
    flood of them would drown the agent's log in the client's fault. This turns each into one warning line, at
    most one per ``interval`` seconds, counting the ones it held back; the server's own errors pass as they
    are."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last: float | None = None
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self._held_back += 1
            return False
        why = " ".join(str(exc.message).split())[:120]
        more = f"; {self._held_back} more since the last such line" if self._held_back else ""
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "preview: refused a malformed HTTP request from %s (%s: %s)%s", (
            remote, type(exc).__name__, why, more)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._last, self._held_back = now, 0
        return True


HTTP_LOG = logging.getLogger("edge_agent.preview.http")  # aiohttp's per-request errors, through the filter
MALFORMED_REQUESTS = MalformedRequestLog()
HTTP_LOG.addFilter(MALFORMED_REQUESTS)


class PreviewServer:
    def __init__(self, board: PreviewBoard, host: str = "127.0.0.1", port: int = 0) -> None:
        self.board = board
        self.host = host
        self.port = port  # 0: any free port; the bound one once started
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/events", self._events)
        app.router.add_static("/static", STATIC)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0, logger=HTTP_LOG)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:  # the port is taken, the host is not this machine's
            await runner.cleanup()
            # asyncio's message repeats the address; the errno's own words are enough after ours
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise PreviewError(f"preview: cannot serve on {self.host}:{self.port} ({why})") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        if not is_loopback(self.host):
            log.warning("preview page on %s: it shows raw camera frames; keep it on the trusted network", self.url)
        log.info("preview page on %s", self.url)

    async def stop(self) -> None:
        self._closing.set()  # live streams end at their next tick instead of holding the shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.board.snapshot())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent: dict[str, int] = {}  # camera -> sequence of the frame this page has the pixels of
        self.board.clients += 1
        try:
            while not self._closing.is_set():
                event = await self.event(sent)
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), 1 / self.board.fps)
        except ConnectionError:  # the page went away
            pass
        finally:
            self.board.clients -= 1
        return response

    async def event(self, sent: dict[str, int]) -> dict[str, Any]:
        """A snapshot, each camera with ``shown``: the frame whose pixels the page has (with its boxes), and
        those pixels when ``sent`` says the page does not have them yet."""
        snapshot = self.board.snapshot()
        for camera in snapshot["cameras"]:
            rendered = await self.board.cameras[camera["id"]].rendered(1 / self.board.fps)
            camera["shown"] = None if rendered is None else rendered.fields
            if rendered is not None and sent.get(camera["id"]) != rendered.sequence:
                camera["image"] = "data:image/jpeg;base64," + rendered.jpeg_base64
                camera["activation"] = "data:image/png;base64," + rendered.activation_png_base64
                sent[camera["id"]] = rendered.sequence
        return snapshot
