"""Frame sources against real servers: a gst-rtsp-server camera (killed, frozen, restarted), an aiortc WHEP
camera, and video files written here. No mocks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp.web
import aioice.ice
import av
import cv2
import numpy as np
import pytest
import skimage.data
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from edge_agent.sources import Backoff, Frame, LatestFrameSlot, SourceError, feed, open_source
from edge_agent.sources.av_source import AvSource
from edge_agent.sources.whep import WhepSource, is_loopback_host, loopback_only_ice
from tests.rig.servers import RtspServer, free_port
from tests.rig.whep_camera import start_whep_camera
from tests.waiting import DEADLINE, wait_until

WIDTH, HEIGHT = 640, 480


# -- fixtures


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """The test picture at the cameras' resolution (the RTSP rig scales its PNG the same way)."""
    rgb = cv2.resize(skimage.data.astronaut(), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="session")
def astronaut_png(tmp_path_factory: pytest.TempPathFactory, astronaut_bgr: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("rig") / "astronaut.png"
    assert cv2.imwrite(str(path), astronaut_bgr)
    return path


@pytest.fixture
def rtsp_server(gst_rtsp: None, astronaut_png: Path) -> Iterator[RtspServer]:
    server = RtspServer(astronaut_png, WIDTH, HEIGHT, fps=15)
    try:
        yield server.start()
    finally:
        server.close()  # SIGKILL by PID (continuing it first if a test left it stopped)


def write_clip(path: Path, count: int, fps: int = 12, size: tuple[int, int] = (320, 240)) -> list[int]:
    """An H.264 (or MPEG-4 Part 2) clip whose frame i is a flat grey of level 20*i; returns the levels."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    levels = [20 + 15 * i for i in range(count)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for level in levels:
            image = np.full((size[1], size[0], 3), level, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())
    return levels


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def frame_after(slot: LatestFrameSlot, after: float, timeout: float = DEADLINE) -> Frame:
    """The first frame in ``slot`` captured after wall time ``after`` (a timestamp, compared, not timed)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await slot.get()
            assert frame is not None, "slot closed"
            if frame.capture_time > after:
                return frame


@contextlib.asynccontextmanager
async def running(coro: object) -> object:
    """Run ``coro`` as a task for the block; cancel it (and wait) on the way out, even on failure."""
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def av_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("av-source")]


# -- files


@pytest.mark.asyncio
async def test_file_source_reads_every_frame_then_ends(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    levels = write_clip(path, count=10)
    source = open_source(str(path))
    assert not source.live
    async with contextlib.aclosing(source.frames()) as frames:
        got = [frame async for frame in frames]
    assert [f.index for f in got] == list(range(len(levels)))
    for frame, level in zip(got, levels, strict=True):
        assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8
        assert frame.image.flags.c_contiguous
        assert abs(float(frame.image.mean()) - level) < 4
        assert frame.decode_seconds >= 0

    # Through feed: the end of a file closes the slot and feed returns (no reconnect).
    slot = LatestFrameSlot()
    reconnects: list[None] = []
    await asyncio.wait_for(feed(open_source(f"file://{path}"), slot, on_reconnect=lambda: reconnects.append(None)), 10)
    assert slot.closed and not reconnects
    last = await slot.get()
    assert last is not None and last.index == len(levels) - 1
    assert await slot.get() is None


@pytest.mark.asyncio
async def test_realtime_file_is_paced_like_a_camera(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_clip(path, count=8, fps=20)  # 7 frame periods = 0.35 s
    source = open_source(str(path), realtime_files=True)
    started = time.monotonic()
    async with contextlib.aclosing(source.frames()) as frames:
        got = [frame async for frame in frames]
    elapsed = time.monotonic() - started
    assert len(got) == 8
    assert elapsed > 0.3, elapsed  # paced: never faster than the clip (a busy machine is only ever slower)


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="video file not found"):
        open_source(str(missing))
    with pytest.raises(SourceError, match="video file not found"):
        open_source(f"file://{missing}")


@pytest.mark.asyncio
async def test_undecodable_file_is_a_source_error_that_feed_raises(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"this is not a video" * 100)
    slot = LatestFrameSlot()
    errors: list[BaseException] = []
    with pytest.raises(SourceError, match="cannot read video file"):
        await asyncio.wait_for(feed(open_source(str(path)), slot, on_error=errors.append), 10)
    assert slot.closed


@pytest.mark.asyncio
async def test_a_file_with_frames_past_the_pixel_limit_ends_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    """Refused from the stream's header, before a frame is decoded; and a frame that grows mid-way (a raw MJPEG
    stream is JPEGs one after another, each its own size) is refused before it becomes a BGR array."""
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "50000")
    path = tmp_path / "clip.mp4"
    write_clip(path, count=3)  # 320x240: 76,800 pixels
    slot = LatestFrameSlot()
    with pytest.raises(SourceError, match=r"clip\.mp4: 320x240 frames, more than the 50000 pixels allowed "
                                          r"\(FROSTED_MAX_IMAGE_PIXELS\)$"):
        await asyncio.wait_for(feed(open_source(str(path)), slot), DEADLINE)
    assert slot.closed and await slot.get() is None  # not one frame of it

    growing = tmp_path / "growing.mjpeg"
    growing.write_bytes(b"".join(cv2.imencode(".jpg", np.full((h, w, 3), 90, np.uint8))[1].tobytes()
                                 for w, h in [(64, 48), (64, 48), (320, 240), (64, 48)]))
    got: list[Frame] = []
    with pytest.raises(SourceError, match=r"growing\.mjpeg: 320x240 frames, more than the 50000"):
        async with contextlib.aclosing(open_source(str(growing)).frames()) as frames:
            async for frame in frames:
                got.append(frame)
    assert [f.image.shape for f in got] == [(48, 64, 3)] * 2


def test_a_pixel_limit_that_is_not_a_number_is_one_line(monkeypatch) -> None:
    from facesplit.images import ImageError

    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match=r"^FROSTED_MAX_IMAGE_PIXELS='lots': expected a positive number"):
        open_source("rtsp://camera.example/stream")


# -- RTSP


@pytest.mark.asyncio
async def test_rtsp_frames_resemble_the_camera_image(rtsp_server: RtspServer, astronaut_bgr: np.ndarray) -> None:
    source = open_source(rtsp_server.url)
    assert source.live
    async with contextlib.aclosing(source.frames()) as frames:
        first = await anext(frames)
        later = [await anext(frames) for _ in range(5)]
    for frame in [first, *later]:
        assert frame.image.shape == (HEIGHT, WIDTH, 3)
        assert mean_abs_diff(frame.image, astronaut_bgr) < 12
    assert [f.index for f in later] == list(range(1, 6))
    # Closing the generator stopped its decode thread.
    await wait_until(lambda: not av_threads(), "the decode thread to end")


@pytest.mark.asyncio
async def test_a_camera_past_the_pixel_limit_is_a_disconnect_retried(rtsp_server: RtspServer, monkeypatch) -> None:
    """A camera's oversized frames do not end the agent (its other cameras go on): each connection is refused
    with the reason and retried with backoff, so the camera heals once it is set to a smaller size."""
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", str(WIDTH * HEIGHT - 1))
    slot = LatestFrameSlot()
    errors: list[BaseException] = []
    reconnects: list[None] = []
    task = asyncio.create_task(feed(open_source(rtsp_server.url), slot, backoff=Backoff(0.05, 0.1),
                                    on_error=errors.append, on_reconnect=lambda: reconnects.append(None)))
    try:
        await wait_until(lambda: len(reconnects) >= 2, "two refused connections retried")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert all(isinstance(e, ConnectionError) and str(e) == f"{rtsp_server.url}: {WIDTH}x{HEIGHT} frames, more "
               f"than the {WIDTH * HEIGHT - 1} pixels allowed (FROSTED_MAX_IMAGE_PIXELS)" for e in errors), errors
    assert not slot.pending and slot.dropped == 0  # no frame got through
    await wait_until(lambda: not av_threads(), "the decode threads to end")


@pytest.mark.asyncio
async def test_rtsp_errors_do_not_leak_credentials() -> None:
    source = open_source(f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/cam", open_timeout=2)
    assert "hunter2" not in source.url and "admin" not in source.url
    with pytest.raises((ConnectionError, TimeoutError)) as caught:
        async with contextlib.aclosing(source.frames()) as frames:
            await anext(frames)
    assert "hunter2" not in str(caught.value)


@pytest.mark.asyncio
async def test_rtsp_reconnects_after_server_killed_and_restarted(rtsp_server: RtspServer) -> None:
    slot = LatestFrameSlot()
    reconnects: list[None] = []
    async with running(feed(open_source(rtsp_server.url), slot, on_reconnect=lambda: reconnects.append(None))):
        before = await frame_after(slot, 0)

        rtsp_server.kill()
        await wait_until(lambda: reconnects, "feed to notice the dead server")
        # Stay down while the backoff grows to its cap (pacing the scenario, not timing it).
        await wait_until(lambda: len(reconnects) >= 5, "feed to retry the dead server")

        await asyncio.to_thread(rtsp_server.restart)
        ready_at = rtsp_server.ready_at
        assert ready_at is not None
        after = await frame_after(slot, ready_at)
        assert after.index > before.index


@pytest.mark.asyncio
async def test_rtsp_frozen_server_is_noticed_by_the_read_timeout(rtsp_server: RtspServer) -> None:
    slot = LatestFrameSlot()
    noticed: list[None] = []
    errors: list[BaseException] = []
    source = open_source(rtsp_server.url, open_timeout=2.0, read_timeout=1.0)
    async with running(feed(source, slot, on_reconnect=lambda: noticed.append(None), on_error=errors.append)):
        await frame_after(slot, 0)

        rtsp_server.stop_signal()
        try:
            await wait_until(lambda: noticed, "feed to notice the frozen server")
        finally:
            rtsp_server.cont()
        assert isinstance(errors[0], TimeoutError)  # the read timeout noticed it, not a closed connection

        # Thawed, the camera is picked up again by a new connection.
        await frame_after(slot, time.time())
    # Decode threads left blocked by the freeze all end (their FFmpeg timeouts fire).
    await wait_until(lambda: not av_threads(), "the decode threads to end")


@pytest.mark.asyncio
async def test_an_rtsp_server_that_says_nothing_is_an_open_timeout_not_invalid_data() -> None:
    connected = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # reads what the client sends, answers nothing, until the client goes

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        source = open_source(f"rtsp://127.0.0.1:{port}/cam", open_timeout=1.0, read_timeout=5.0)
        with pytest.raises(ConnectionError, match=r"no answer within the 1 s open timeout"):
            async with contextlib.aclosing(source.frames()) as frames:
                await anext(frames)
        assert connected.is_set()
    finally:
        server.close()


# -- WHEP


@pytest.mark.asyncio
async def test_whep_frames_resemble_the_camera_image_and_session_is_deleted(astronaut_bgr: np.ndarray) -> None:
    camera, url = await start_whep_camera(astronaut_bgr, fps=15)
    try:
        port = url.split(":")[2].split("/")[0]
        source = open_source(f"whep://127.0.0.1:{port}/whep")
        assert isinstance(source, WhepSource) and source.live
        async with contextlib.aclosing(source.frames()) as frames:
            first = await anext(frames)
            later = [await anext(frames) for _ in range(4)]
            assert len(camera.sessions) == 1
        for frame in [first, *later]:
            assert frame.image.shape == (HEIGHT, WIDTH, 3)
            assert mean_abs_diff(frame.image, astronaut_bgr) < 12
        assert [f.index for f in later] == list(range(1, 5))
        # Closing the generator hung up: the camera saw the DELETE of the session it created.
        assert len(camera.deleted) == 1 and not camera.sessions
    finally:
        await camera.stop()


async def test_a_whep_camera_past_the_pixel_limit_is_a_disconnect_that_hangs_up(astronaut_bgr: np.ndarray,
                                                                               monkeypatch) -> None:
    monkeypatch.setenv("FROSTED_MAX_IMAGE_PIXELS", "1000")
    camera, url = await start_whep_camera(astronaut_bgr, fps=15)
    try:
        port = url.split(":")[2].split("/")[0]
        source = open_source(f"whep://127.0.0.1:{port}/whep")
        with pytest.raises(ConnectionError, match=rf"{WIDTH}x{HEIGHT} frames, more than the 1000 pixels allowed"):
            async with contextlib.aclosing(source.frames()) as frames:
                await anext(frames)
        assert len(camera.deleted) == 1 and not camera.sessions  # the session it opened was hung up
    finally:
        await camera.stop()


class HostileWhep:
    """A WHEP endpoint answering the offer with ``answer(offer)``: (status, body) or None to never answer."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.pcs: list[RTCPeerConnection] = []
        self.runner: aiohttp.web.AppRunner | None = None
        self.closing = asyncio.Event()

    async def start(self) -> str:
        app = aiohttp.web.Application()
        app.router.add_post("/whep", self._post)
        self.runner = aiohttp.web.AppRunner(app)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"whep://127.0.0.1:{self.runner.addresses[0][1]}/whep"

    async def _post(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        answered = await self.answer(self, await request.text())
        if answered is None:
            await self.closing.wait()  # no answer while the client waits; its timeout ends it
            answered = 503, b""
        status, body = answered
        return aiohttp.web.Response(status=status, body=body, content_type="application/sdp",
                                    headers={"Location": "/whep/s1"})

    async def stop(self) -> None:
        self.closing.set()
        for pc in self.pcs:
            await pc.close()
        if self.runner is not None:
            await self.runner.cleanup()


async def answer_sending_nothing(server: HostileWhep, offer: str) -> tuple[int, bytes]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no track added: the answer's video is inactive
    server.pcs.append(pc)
    with loopback_only_ice():
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
    return 201, pc.localDescription.sdp.encode()


async def huge_answer(server: HostileWhep, offer: str) -> tuple[int, bytes]:
    return 201, b"v=0\r\n" + b"a=x\r\n" * 1_000_000


async def answer_with_many_candidates(server: HostileWhep, offer: str) -> tuple[int, bytes]:
    candidates = "".join(f"a=candidate:{i} 1 udp 100 127.0.0.1 {20000 + i} typ host\r\n" for i in range(500))
    return 201, f"v=0\r\n{candidates}".encode()


async def no_answer(server: HostileWhep, offer: str) -> None:
    return None


@pytest.mark.asyncio
@pytest.mark.parametrize(("answer", "said"), [
    (answer_sending_nothing, "the WHEP answer sends no video"),
    (huge_answer, "the WHEP answer is over 65536 bytes"),  # was read whole: 400 MB of it took 1.2 GB
    (answer_with_many_candidates, "offers 500 ICE candidates, more than 64"),  # aiortc blocked the loop 2 min
    (no_answer, "no WHEP answer within 1 s"),  # was "TimeoutError: " with nothing after it
])
async def test_a_hostile_whep_answer_is_a_disconnect_that_says_why(answer, said) -> None:
    server = HostileWhep(answer)
    url = await server.start()
    try:
        source = open_source(url, open_timeout=1.0)
        with pytest.raises(ConnectionError) as error:
            async with contextlib.aclosing(source.frames()) as frames:
                await anext(frames)
        assert said in str(error.value) and "\n" not in str(error.value)
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_whep_reconnects_when_the_camera_restarts(astronaut_bgr: np.ndarray) -> None:
    camera, url = await start_whep_camera(astronaut_bgr, fps=15)
    restarted = None
    slot = LatestFrameSlot()
    reconnects: list[None] = []
    source = open_source(url.replace("http://", "whep://"), read_timeout=1.0)
    try:
        async with running(feed(source, slot, on_reconnect=lambda: reconnects.append(None))):
            before = await frame_after(slot, 0)
            await camera.stop()  # closes its peer connections: our track ends
            await wait_until(lambda: reconnects, "feed to notice the camera's loss")
            await asyncio.sleep(0.5)  # the camera stays away a while (pacing the fake, not timing it)
            restarted, _ = await start_whep_camera(astronaut_bgr, port=camera.port, fps=15)
            after = await frame_after(slot, time.time())
            assert after.index > before.index
        assert restarted.deleted, "feed's cancellation did not hang up"
    finally:
        await camera.stop()
        if restarted is not None:
            await restarted.stop()


def test_loopback_ice_is_confined_to_its_block() -> None:
    with loopback_only_ice():
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    # Outside the block aioice's own lookup answers again (it never offers 127.0.0.1).
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    with loopback_only_ice(enabled=False):
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    assert is_loopback_host("http://127.0.0.1:8080/whep") and is_loopback_host("http://localhost/whep")
    assert is_loopback_host("http://[::1]:80/whep")
    assert not is_loopback_host("http://192.0.2.7/whep") and not is_loopback_host("https://cam.example/whep")


# -- keep-latest slot and backoff


def make_frame(index: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), time.time(), 0.0, index)


@pytest.mark.asyncio
async def test_latest_frame_slot_keeps_only_the_newest() -> None:
    slot = LatestFrameSlot()
    for i in range(3):
        slot.put(make_frame(i))
    newest = await slot.get()
    assert newest is not None and newest.index == 2
    assert slot.dropped == 2

    # get() waits for the next put.
    waiter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0)  # one turn of the loop: the waiter is now waiting
    assert not waiter.done()
    slot.put(make_frame(3))
    assert (await asyncio.wait_for(waiter, 1)).index == 3

    # close(): a pending frame is still handed out, then None; a waiting get() wakes with None.
    slot.put(make_frame(4))
    slot.close()
    assert slot.closed
    assert (await slot.get()).index == 4
    assert await slot.get() is None
    slot.put(make_frame(5))  # ignored once closed
    assert await slot.get() is None

    other = LatestFrameSlot()
    waiter = asyncio.ensure_future(other.get())
    await asyncio.sleep(0)  # one turn of the loop: the waiter is now waiting
    other.close()
    assert await asyncio.wait_for(waiter, 1) is None


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    for attempt, delay in enumerate(delays):
        expected = min(1.0, 0.1 * 2**attempt)
        assert expected * 0.8 - 1e-9 <= delay <= min(1.0, expected * 1.2) + 1e-9, (attempt, delay)
    # Never more than 1 s between attempts: a returning camera is retried within a second.
    assert max(delays) <= 1.0
    backoff.reset()
    assert backoff.next_delay() <= 0.12
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)


# -- URLs


def test_unsupported_url_is_a_one_line_source_error_without_credentials() -> None:
    with pytest.raises(SourceError) as caught:
        open_source("ftp://operator:s3cret@cam.example/stream")
    message = str(caught.value)
    assert "\n" not in message
    assert "s3cret" not in message and "operator" not in message
    assert "cam.example" in message and "rtsp://" in message


def test_url_schemes_pick_the_right_source(tmp_path: Path) -> None:
    rtsp = open_source("rtsp://user:pw@10.0.0.5:554/stream")
    assert isinstance(rtsp, AvSource) and rtsp.live and rtsp.options["rtsp_transport"] == "tcp"
    assert rtsp.url == "rtsp://10.0.0.5:554/stream"
    for url, endpoint in [
        ("whep://127.0.0.1:8889/cam/whep", "http://127.0.0.1:8889/cam/whep"),
        ("wheps://cam.example/whep", "https://cam.example/whep"),
        ("whep+http://cam.example/whep", "http://cam.example/whep"),
        ("whep+https://cam.example/whep", "https://cam.example/whep"),
    ]:
        source = open_source(url)
        assert isinstance(source, WhepSource) and source.endpoint == endpoint
    hls = open_source("https://cam.example/live.m3u8")
    assert isinstance(hls, AvSource) and hls.live
    with pytest.raises(SourceError, match="video device not found"):
        open_source("/dev/video97")
    with pytest.raises(SourceError, match="video device not found"):
        open_source("v4l2:///dev/video97")


def test_urls_in_messages_keep_no_credentials_but_stay_apart() -> None:
    from facesplit.urls import redact_url

    assert redact_url("rtsp://admin:pw@cam.local/stream?channel=1&token=abc") == \
        "rtsp://cam.local/stream?channel=1&token=***"
    assert redact_url("https://h/w.pth?X-Amz-Signature=zz&X-Amz-Credential=k&v=2") == \
        "https://h/w.pth?X-Amz-Signature=***&X-Amz-Credential=***&v=2"
    assert redact_url("rtsp://cam.local/stream?channel=2") == "rtsp://cam.local/stream?channel=2"
    assert redact_url("rtsp://[::1") == "<unparseable URL>"
