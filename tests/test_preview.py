"""The live preview page (`edge_agent.preview`): its state and server logic on their own, then the page itself in
a real browser (Debian's chromium driven by Playwright) against a running agent on two real RTSP cameras and a
real tail over loopback gRPC.

The browser test writes a screenshot of the page to ``$FROSTED_PREVIEW_SCREENSHOT`` when set (the README's
``docs/images/preview.png`` is such a run), else into the test's temporary folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.backend import TorchHeadBackend
from edge_agent.config import AgentConfig
from edge_agent.preview import CameraCounts, CameraView, PreviewBoard, PreviewError, PreviewServer
from edge_agent.preview.board import STALE_SECONDS
from edge_agent.preview.render import channel_energy
from edge_agent.preview.server import MALFORMED_REQUESTS, MalformedRequestLog
from edge_agent.sink import FrameResult, JsonLinesSink
from facesplit.images import sample_image
from facesplit.noise.shipped import load_profile_for
from facesplit.weights import clean_fingerprint
from frosted.commands.edge import _overrides
from frosted_wire.codec import encode_tensor
from tests.rig.servers import RtspServer, free_port
from tests.tail_helpers import PROFILE, running_tail, tails_for
from tests.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(sequence: int, capture_time: float, boxes: list[list[float]] | None = None) -> FrameResult:
    boxes = [[10, 20, 110, 140, 0.97]] if boxes is None else boxes
    return FrameResult("cam", sequence, sequence, capture_time, 320, 240,
                       np.array(boxes, dtype=np.float32).reshape(-1, 5), {"head": 12.5, "end_to_end": 80.0})


IMAGE = np.full((240, 320, 3), 90, np.uint8)
ACTIVATION = encode_tensor(np.random.default_rng(0).normal(size=(8, 4, 4)).astype(np.float32))


def board_with(clock: Clock, counts: CameraCounts = CameraCounts()) -> tuple[PreviewBoard, CameraView]:
    board = PreviewBoard(fps=50)
    view = board.add_camera("cam", lambda: counts)
    view.clock = clock
    return board, view


# --- state -> JSON ---------------------------------------------------------------------------------------

def test_snapshot_is_json_with_the_frames_boxes_counters_and_wire_tensor():
    clock = Clock()
    board, view = board_with(clock, CameraCounts(answered=7, dropped=3, lost=1))
    assert board.snapshot()["cameras"][0]["status"] == "connecting"
    for sequence in range(4):
        clock.now += 0.2
        view.answered(result(sequence, clock.now - 0.05), IMAGE, ACTIVATION)
    camera = json.loads(json.dumps(board.snapshot()))["cameras"][0]
    assert camera["status"] == "up" and camera["uplink"] == "up"
    assert camera["frame"]["sequence"] == 3
    assert camera["frame"]["boxes"] == result(3, 0).record()["boxes"]  # exactly as the JSON lines have them
    assert camera["frame"]["wire"] == {"shape": [8, 4, 4], "dtype": "float16", "bytes": 8 * 4 * 4 * 2}
    assert camera["dropped"] == {"keep_latest": 3, "uplink": 1} and camera["answered"] == 7
    assert camera["fps"] == pytest.approx(5.0)
    assert camera["latency_ms"] == {"head": 12.5, "end_to_end": 80.0}
    assert "image" not in camera, "a snapshot carries no pixels"


def test_a_camera_that_disconnects_is_down_until_a_frame_captured_after_it_arrives():
    clock = Clock()
    _, view = board_with(clock)
    view.answered(result(0, clock.now), IMAGE, ACTIVATION)
    clock.now += 0.1
    view.source_reconnecting()
    clock.now += 0.1
    # a frame captured before the disconnect, answered after it, does not bring the camera back
    view.answered(result(1, clock.now - 0.15), IMAGE, ACTIVATION)
    state = view.snapshot()
    assert (state["status"], state["reconnects"]["source"]) == ("down", 1)
    assert "reconnecting" in state["status_detail"]
    clock.now += 0.5
    view.answered(result(2, clock.now), IMAGE, ACTIVATION)
    assert view.snapshot()["status"] == "up"


def test_a_camera_with_no_frames_for_a_while_is_stalled_and_one_never_reached_is_down():
    clock = Clock()
    _, view = board_with(clock)
    view.answered(result(0, clock.now), IMAGE, ACTIVATION)
    clock.now += STALE_SECONDS + 0.5
    assert view.snapshot()["status"] == "stalled"
    assert view.snapshot()["uplink"] == "up", "a slow answer is not a broken uplink"
    _, never = board_with(clock)
    never.source_reconnecting()
    assert never.snapshot()["status"] == "down"


def test_frames_dropped_while_the_uplink_is_down_still_show_the_camera_up():
    clock = Clock()
    counts = {"dropped": 0}
    board = PreviewBoard()
    view = board.add_camera("cam", lambda: CameraCounts(answered=1, dropped=counts["dropped"],
                                                        uplink_error="UNAVAILABLE: tail gone"))
    view.clock = clock
    view.answered(result(0, clock.now), IMAGE, ACTIVATION)
    view.snapshot()
    clock.now += 0.1
    view.uplink_reconnecting()  # the stream broke
    for _ in range(5):  # the tail is gone; the camera keeps sending, keep-latest drops what it sends
        clock.now += 1.0
        counts["dropped"] += 15
        state = view.snapshot()
    assert state["status"] == "up"
    assert (state["uplink"], state["uplink_error"]) == ("down", "UNAVAILABLE: tail gone")
    assert state["reconnects"]["uplink"] == 1
    clock.now += 0.1
    view.answered(result(1, clock.now), IMAGE, ACTIVATION)
    assert view.snapshot()["uplink"] == "up"


def test_channel_energy_is_the_rms_over_channels_of_what_was_sent():
    values = np.random.default_rng(1).normal(size=(16, 3, 5)).astype(np.float32)
    for dtype in ("float16", "int8"):
        energy = channel_energy(encode_tensor(values, dtype))
        assert energy.shape == (3, 5)
        np.testing.assert_allclose(energy, np.sqrt((values ** 2).mean(axis=0)), rtol=0.03)


def test_preview_is_off_by_default_on_loopback_and_set_by_its_flag():
    config = AgentConfig(tail={"address": "127.0.0.1:1", "insecure": True}, cameras=[{"id": "c", "url": "x.mp4"}])
    assert (config.preview.port, config.preview.host) == (None, "127.0.0.1")
    assert _overrides(preview__port=8090) == {"preview": {"port": 8090}}


# --- the server: no page, no encoding ------------------------------------------------------------------

@contextlib.asynccontextmanager
async def serving(board: PreviewBoard) -> AsyncIterator[tuple[PreviewServer, aiohttp.ClientSession]]:
    server = PreviewServer(board, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as session:
            yield server, session
    finally:
        await server.stop()


async def next_event(response: aiohttp.ClientResponse) -> dict:
    while True:
        line = (await response.content.readline()).decode()
        if line.startswith("data: "):
            return json.loads(line.removeprefix("data: "))


async def test_frames_are_encoded_only_for_a_connected_page_and_only_when_they_change():
    clock = Clock()
    board, view = board_with(clock)
    view.answered(result(0, clock.now), IMAGE, ACTIVATION)
    async with serving(board) as (_, session):
        for path in ("/", "/static/preview.js", "/static/preview.css"):
            async with session.get(path) as response:
                assert response.status == 200, path
        async with session.get("/api/state") as response:
            assert (await response.json())["cameras"][0]["frame"]["sequence"] == 0
        assert board.encodes == 0, "no page connected: nothing encoded"

        async with session.get("/api/events") as events:
            assert events.headers["Content-Type"].startswith("text/event-stream")
            first = (await next_event(events))["cameras"][0]
            assert first["image"].startswith("data:image/jpeg;base64,")
            assert first["activation"].startswith("data:image/png;base64,")
            assert first["shown"]["sequence"] == 0 and first["shown"]["boxes"] == first["frame"]["boxes"]
            again = (await next_event(events))["cameras"][0]
            assert "image" not in again, "the page already has this frame"
            assert board.encodes == 1 and board.clients == 1
            view.answered(result(1, clock.now, boxes=[]), IMAGE, ACTIVATION)
            while "image" not in (update := (await next_event(events))["cameras"][0]):
                pass
            assert update["shown"]["sequence"] == 1 and update["shown"]["boxes"] == []
            assert board.encodes == 2
        await wait_until(lambda: board.clients == 0, "the page's stream to end when it disconnects")


async def test_encoding_is_rate_bounded_whatever_the_frame_rate():
    clock = Clock()
    _, view = board_with(clock)
    view.answered(result(0, clock.now), IMAGE, ACTIVATION)
    first = await view.rendered(min_interval=3600)
    for sequence in range(1, 20):
        view.answered(result(sequence, clock.now), IMAGE, ACTIVATION)
        assert await view.rendered(min_interval=3600) is first
    assert view.encodes == 1
    assert (await view.rendered(min_interval=0)).sequence == 19
    assert view.encodes == 2


async def test_a_port_in_use_is_one_line():
    async with serving(PreviewBoard()) as (server, _):
        taken = rf"^preview: cannot serve on 127.0.0.1:{server.port} \(Address already in use\)$"
        with pytest.raises(PreviewError, match=taken):
            await PreviewServer(PreviewBoard(), "127.0.0.1", server.port).start()


async def raw_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    reply = await reader.read(64)
    writer.close()
    return reply


async def test_a_flood_of_malformed_requests_is_refused_with_one_log_line_per_interval(monkeypatch, caplog):
    clock = Clock()
    for name, value in vars(MalformedRequestLog(interval=60.0, clock=clock)).items():
        monkeypatch.setattr(MALFORMED_REQUESTS, name, value)  # the agent's one filter, on a clock of the test's
    malformed = [b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /\x00bad HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 20_000 + b"\r\n\r\n"]
    async with serving(PreviewBoard()) as (server, _):
        with caplog.at_level(logging.DEBUG, logger="edge_agent.preview.http"):
            for request in malformed * 3:
                assert (await raw_request(server.port, request)).startswith(b"HTTP/1.0 400")
            clock.now += 61
            assert (await raw_request(server.port, malformed[0])).startswith(b"HTTP/1.0 400")
            assert (await raw_request(server.port, b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n")
                    ).startswith(b"HTTP/1.1 200")
    lines = [r for r in caplog.records if r.name == "edge_agent.preview.http"]
    assert [r.levelname for r in lines] == ["WARNING", "WARNING"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in lines)
    assert "LineTooLong" in lines[0].getMessage() and "127.0.0.1" in lines[0].getMessage()
    assert lines[1].getMessage().endswith("; 8 more since the last such line")


# --- the page in a real browser ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def camera_images(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cameras")
    astronaut = sample_image("astronaut")
    paths = folder / "astronaut.png", folder / "mirrored.png"
    cv2.imwrite(str(paths[0]), astronaut)
    cv2.imwrite(str(paths[1]), cv2.flip(astronaut, 1))
    return paths


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: the preview page's browser test needs Debian's chromium "
                    "(make system-deps)")
    return CHROMIUM


# Samples the canvas along each box's left, right and bottom edges (the score label sits on the top one) and
# returns the fraction of samples in the overlay's colour, with what the canvas says it drew.
OVERLAY_CHECK = """(camera) => {
  const canvas = document.querySelector(`[data-camera="${camera}"] .frame-canvas`);
  const boxes = JSON.parse(canvas.dataset.boxes);
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  const lime = (x, y) => {
    const i = (Math.round(y) * canvas.width + Math.round(x)) * 4;
    return pixels.data[i] < 90 && pixels.data[i + 1] > 200 && pixels.data[i + 2] < 90;
  };
  const edges = boxes.map(([x1, y1, x2, y2]) => {
    let hits = 0, samples = 0;
    for (let f = 0.1; f <= 0.9; f += 0.05) {
      for (const [x, y] of [[x1, y1 + f * (y2 - y1)], [x2, y1 + f * (y2 - y1)], [x1 + f * (x2 - x1), y2]]) {
        if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) continue;
        samples += 1;
        hits += lime(x, y) ? 1 : 0;
      }
    }
    return samples ? hits / samples : 0;
  });
  return {sequence: Number(canvas.dataset.sequence), boxes, edges, size: [canvas.width, canvas.height]};
}"""


def status_is(camera: str, status: str) -> str:
    return f"document.querySelector('[data-camera=\"{camera}\"]')?.dataset.status === '{status}'"


def drawn_after(camera: str, sequence: int) -> str:
    return (f"Number(document.querySelector('[data-camera=\"{camera}\"] .frame-canvas')?.dataset.sequence ?? -1)"
            f" > {sequence}")


def sequence_drawn(camera: str) -> str:
    return f"document.querySelector('[data-camera=\"{camera}\"] .frame-canvas').dataset.sequence"


@pytest.mark.slow
async def test_the_page_in_a_browser_with_two_rtsp_cameras_one_killed_and_back(
        service_detector, camera_images, gst_rtsp, chromium, tmp_path):
    from playwright.async_api import async_playwright

    out = tmp_path / "boxes.jsonl"
    wait = 60_000  # ms: a deadline for the page, never a pause
    with RtspServer(camera_images[0], 640, 480, fps=15) as lobby, \
            RtspServer(camera_images[1], 640, 480, fps=15) as dock:
        async with running_tail(tails_for(service_detector)) as tail:
            config = AgentConfig(tail={"address": f"127.0.0.1:{tail.port}", "insecure": True},
                                 cameras=[{"id": "lobby", "url": lobby.url}, {"id": "dock", "url": dock.url}],
                                 output=str(out), preview={"port": free_port()},
                                 sources={"open_seconds": 5, "read_seconds": 2})
            profile = load_profile_for(service_detector, PROFILE)
            agent = EdgeAgent(config, TorchHeadBackend(service_detector, profile,
                                                       clean_fingerprint(service_detector.source)),
                              JsonLinesSink(str(out)))
            run = asyncio.create_task(agent.run())
            try:
                await wait_until(lambda: agent.preview is not None, "the preview page to listen")
                assert agent.preview.board.encodes == 0
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(
                        executable_path=str(chromium), headless=True,
                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                    page = await browser.new_page(viewport={"width": 1100, "height": 900})
                    await page.goto(agent.preview.url)
                    # the page loads and draws a frame of each camera, then newer ones
                    for camera in ("lobby", "dock"):
                        await page.wait_for_function(drawn_after(camera, -1), timeout=wait)
                    first = int(await page.evaluate(sequence_drawn("lobby")))
                    await page.wait_for_function(drawn_after("lobby", first), timeout=wait)

                    # the overlay is the agent's JSON line for the very frame on the canvas
                    drawn = await page.evaluate(OVERLAY_CHECK, "lobby")
                    records = {r["sequence"]: r for r in map(json.loads, out.read_text().splitlines())
                               if r["camera"] == "lobby"}
                    assert drawn["boxes"] == records[drawn["sequence"]]["boxes"]
                    assert drawn["size"] == [640, 480]
                    assert any(box[4] >= 0.7 for box in drawn["boxes"]), "the astronaut's face"
                    assert min(drawn["edges"]) > 0.9, drawn

                    # a killed camera shows as down, then recovers
                    dock.kill()
                    await page.wait_for_function(status_is("dock", "down"), timeout=wait)
                    assert await page.locator('[data-camera="dock"] .down-overlay').is_visible()
                    assert agent.pipelines[0].answered > 0
                    before = int(await page.evaluate(sequence_drawn("dock")))
                    dock.start()
                    await page.wait_for_function(status_is("dock", "up"), timeout=wait)
                    await page.wait_for_function(drawn_after("dock", before), timeout=wait)
                    assert not await page.locator('[data-camera="dock"] .down-overlay').is_visible()

                    await page.wait_for_function(status_is("lobby", "up"), timeout=wait)
                    shot = Path(os.environ.get("FROSTED_PREVIEW_SCREENSHOT", tmp_path / "preview.png"))
                    shot.parent.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(tmp_path / "preview.png"), full_page=True)
                    if shot != tmp_path / "preview.png":
                        shutil.copyfile(tmp_path / "preview.png", shot)
                    await browser.close()
                assert (tmp_path / "preview.png").read_bytes().startswith(b"\x89PNG")
                assert agent.preview.board.encodes > 0
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                agent.sink.close()
