"""Frames over WebRTC from a WHEP endpoint (RFC 9725), received with aiortc.

WHEP is plain HTTP around one SDP exchange: POST the offer (``application/sdp``), get ``201 Created`` with
the answer and a ``Location`` for the session, DELETE that location to hang up.

Loopback: aioice gathers host candidates from every interface *except* 127.0.0.1, and neither aioice nor
aiortc has a setting to choose the addresses. For an endpoint on a loopback address (a camera bridge on the
same box, the test rig) the candidates would then sit on the external interface, which may be firewalled
or absent. ``loopback_only_ice`` swaps aioice's address lookup for one returning 127.0.0.1, but only for
the code running inside it (a ContextVar, which aiortc's gathering tasks inherit), so other peer
connections in the process keep the normal behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urljoin, urlsplit

import aiohttp
import aioice.ice
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from edge_agent.sources.base import Frame
from facesplit.images import frames_too_large, max_image_pixels
from facesplit.urls import redact_url

log = logging.getLogger("edge_agent.sources")

_LOOPBACK_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("edge_agent_loopback_ice", default=False)
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _LOOPBACK_ONLY.get():
        return ["127.0.0.1"] if use_ipv4 else ["::1"]
    return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)


@contextlib.contextmanager
def loopback_only_ice(enabled: bool = True) -> Iterator[None]:
    """ICE gathering started inside this block offers only loopback host candidates.

    Wrap the calls that gather (``setLocalDescription``, and ``setRemoteDescription`` on the answering
    side). The hook is installed into aioice once and is a pass-through outside such a block.
    """
    if not enabled:
        yield
        return
    aioice.ice.get_host_addresses = _get_host_addresses  # idempotent; see the module docstring
    token = _LOOPBACK_ONLY.set(True)
    try:
        yield
    finally:
        _LOOPBACK_ONLY.reset(token)


def is_loopback_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_ANSWER_BYTES = 64 * 1024
MAX_CANDIDATES = 64  # ICE candidates in one answer: a few per interface and transport is what servers send


class WhepSource:
    """A WHEP endpoint (``http(s)://...``); ``frames()`` is one WebRTC session."""

    live = True
    dropped = 0  # frames are yielded as aiortc hands them over: the camera's keep-latest slot does any dropping

    def __init__(self, endpoint: str, *, open_timeout: float = 5.0, read_timeout: float = 3.0) -> None:
        self.endpoint = endpoint  # the HTTP(S) URL that takes the offer; may hold credentials
        self.url = redact_url(endpoint)
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.max_pixels = max_image_pixels()
        self._indices = itertools.count()

    def __repr__(self) -> str:
        return f"WhepSource({self.url!r})"

    async def frames(self) -> AsyncIterator[Frame]:
        # No STUN/TURN servers: aiortc's default asks a public STUN server, which the edge may not reach.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.open_timeout))
        session_url: str | None = None
        try:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            with loopback_only_ice(is_loopback_host(self.endpoint)):
                # aiortc gathers every candidate inside setLocalDescription, so the offer is complete
                # (no trickle ICE needed, which WHEP servers need not support).
                await pc.setLocalDescription(await pc.createOffer())
            answer, session_url = await self._post_offer(http, pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            track = transceiver.receiver.track
            if track is None:
                raise ConnectionError(f"{self.url}: the WHEP answer sends no video")

            timeout = self.open_timeout + self.read_timeout  # the first frame waits for ICE + DTLS too
            while True:
                if pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"{self.url}: WebRTC connection {pc.connectionState}")
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancel
                        video_frame = await track.recv()
                except MediaStreamError:
                    return  # the track ended: a disconnect
                except TimeoutError:
                    raise TimeoutError(f"no frame from {self.url} for {timeout:.1f} s") from None
                # aiortc decodes in its own thread; what is left to time here is the conversion.
                started = time.perf_counter()
                if (reason := frames_too_large(self.url, video_frame.width, video_frame.height, self.max_pixels)):
                    raise ConnectionError(reason)  # a disconnect: retried, as any camera fault
                image = np.ascontiguousarray(video_frame.to_ndarray(format="bgr24"))
                yield Frame(image, time.time(), time.perf_counter() - started, next(self._indices))
                timeout = self.read_timeout
        finally:
            # Shielded: a cancelled consumer must still hang up, or the camera keeps a session streaming.
            await asyncio.shield(self._hang_up(http, pc, session_url))

    async def _post_offer(self, http: aiohttp.ClientSession, offer: str) -> tuple[str, str | None]:
        try:
            async with http.post(self.endpoint, data=offer, headers={"Content-Type": "application/sdp"}) as reply:
                if reply.status not in (200, 201):
                    raise ConnectionError(f"{self.url}: WHEP offer refused with HTTP {reply.status}")
                # an answer is a few kB: a larger one is read no further (a 400 MB body took 1.2 GB)
                too_big = ConnectionError(f"{self.url}: the WHEP answer is over {MAX_ANSWER_BYTES} bytes, more than "
                                          "any SDP answer")
                if (reply.content_length or 0) > MAX_ANSWER_BYTES:
                    raise too_big
                body = await reply.content.read(MAX_ANSWER_BYTES + 1)
                if len(body) > MAX_ANSWER_BYTES:
                    raise too_big
                location = reply.headers.get("Location")
        except aiohttp.ClientError as exc:
            reason = str(exc).replace(self.endpoint, self.url)  # aiohttp may quote the URL, credentials too
            raise ConnectionError(f"{self.url}: {type(exc).__name__}: {reason}") from None
        except TimeoutError:
            raise ConnectionError(f"{self.url}: no WHEP answer within {self.open_timeout:g} s") from None
        answer = body.decode("utf-8", errors="replace")
        # aiortc's parsing of the answer blocks the event loop, and grows with the square of its candidates
        # (4,000 of them: 5 s with every camera stalled): refuse an answer with more than a peer needs
        if (candidates := sum(line.startswith("a=candidate") for line in answer.splitlines())) > MAX_CANDIDATES:
            raise ConnectionError(f"{self.url}: the WHEP answer offers {candidates} ICE candidates, more than "
                                  f"{MAX_CANDIDATES}")
        # Location may be relative (it usually is): resolve it against the URL we posted to.
        try:
            return answer, urljoin(self.endpoint, location) if location else None
        except ValueError:
            raise ConnectionError(f"{self.url}: the WHEP answer's Location header is not a URL") from None

    async def _hang_up(self, http: aiohttp.ClientSession, pc: RTCPeerConnection, session_url: str | None) -> None:
        try:
            if session_url is not None:
                try:
                    async with http.delete(session_url, timeout=aiohttp.ClientTimeout(total=2.0)) as reply:
                        if reply.status >= 400:
                            log.debug("WHEP DELETE %s answered HTTP %d", redact_url(session_url), reply.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.debug("WHEP DELETE %s failed: %s", redact_url(session_url), exc)
        finally:
            await pc.close()
            await http.close()
