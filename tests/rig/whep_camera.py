"""A WHEP camera for tests and benchmarks: aiohttp + aiortc, streaming a still image on 127.0.0.1.

    camera = WhepCamera(image_bgr, fps=15)
    url = await camera.start()        # http://127.0.0.1:PORT/whep
    ...
    await camera.stop()

POST /whep takes an SDP offer and answers ``201`` with the SDP answer and ``Location: /whep/<id>``;
DELETE /whep/<id> closes that peer (``camera.deleted`` lists the ids, ``camera.sessions`` the open ones).
ICE is loopback-only and asks no STUN server.
"""

from __future__ import annotations

import asyncio
import fractions
import time
import uuid

import aiohttp.web
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from edge_agent.sources.whep import loopback_only_ice

CLOCK_RATE = 90_000  # RTP video clock


class StillImageTrack(VideoStreamTrack):
    """The same picture at ``fps``, time-stamped like a camera's frames."""

    def __init__(self, image_bgr: np.ndarray, fps: float) -> None:
        super().__init__()
        self._image = np.ascontiguousarray(image_bgr)
        self._period = 1.0 / fps
        self._count = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * self._period
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(self._image, format="bgr24")
        frame.pts = round(self._count * self._period * CLOCK_RATE)
        frame.time_base = fractions.Fraction(1, CLOCK_RATE)
        self._count += 1
        return frame


class WhepCamera:
    def __init__(self, image_bgr: np.ndarray, *, fps: float = 15, port: int = 0, path: str = "/whep") -> None:
        self.image = image_bgr
        self.fps = fps
        self.port = port
        self.path = path
        self.sessions: dict[str, RTCPeerConnection] = {}
        self.deleted: list[str] = []
        self.offers = 0
        self._runner: aiohttp.web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> str:
        app = aiohttp.web.Application()
        app.router.add_post(self.path, self._offer)
        app.router.add_delete(self.path + "/{session}", self._delete)
        self._runner = aiohttp.web.AppRunner(app)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.url

    async def stop(self) -> None:
        for pc in list(self.sessions.values()):
            await pc.close()
        self.sessions.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _offer(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        if request.content_type != "application/sdp":
            return aiohttp.web.Response(status=415, text="expected application/sdp")
        self.offers += 1
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(StillImageTrack(self.image, self.fps), direction="sendonly")
        with loopback_only_ice():
            await pc.setRemoteDescription(offer)
            await pc.setLocalDescription(await pc.createAnswer())
        session = uuid.uuid4().hex
        self.sessions[session] = pc
        return aiohttp.web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"{self.path}/{session}"},
        )

    async def _delete(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        session = request.match_info["session"]
        pc = self.sessions.pop(session, None)
        if pc is None:
            return aiohttp.web.Response(status=404)
        self.deleted.append(session)
        await pc.close()
        return aiohttp.web.Response(status=200)


async def start_whep_camera(image_bgr: np.ndarray, port: int = 0, fps: float = 15) -> tuple[WhepCamera, str]:
    """Start a camera; returns it (``await camera.stop()`` when done) and its WHEP URL."""
    camera = WhepCamera(image_bgr, fps=fps, port=port)
    return camera, await camera.start()
