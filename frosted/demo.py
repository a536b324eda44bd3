"""`frosted demo` wiring: a clip made from a shipped photo, a tail and an agent in one process, over real
gRPC with mutual TLS on loopback. The two services only meet on the wire; this module wires them."""

from __future__ import annotations

import contextlib
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from cloud_tail.models import served_tails
from cloud_tail.server import ServerTls, TailServer, TailServerConfig
from edge_agent.agent import EdgeAgent, RunSummary
from edge_agent.backend import TorchHeadBackend
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from facesplit.detector import SplitDetector, load_detector
from facesplit.faceboxes import DEFAULT_SPLIT
from facesplit.images import sample_image
from facesplit.noise.shipped import load_profile_for
from facesplit.postprocess import PostprocessConfig
from facesplit.preprocess import InputSize
from facesplit.weights import clean_fingerprint
from frosted_wire.certs import throwaway_certificates


def make_clip(path: Path, seconds: float, fps: int = 15, size: tuple[int, int] = (1280, 720),
              photo: str = "astronaut") -> Path:
    """An H.264 clip of ``photo`` drifting across a grey frame (so boxes move), written with PyAV."""
    width, height = size
    picture = sample_image(photo)
    fit = min(1.0, 0.9 * height / picture.shape[0], 0.6 * width / picture.shape[1])  # small frames: shrink it
    if fit < 1.0:
        picture = cv2.resize(picture, None, fx=fit, fy=fit, interpolation=cv2.INTER_AREA)
    ph, pw = picture.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        stream.time_base = Fraction(1, fps)
        frames = max(1, round(seconds * fps))
        for i in range(frames):
            canvas = np.full((height, width, 3), 96, dtype=np.uint8)
            x = round((width - pw) * (0.5 + 0.4 * np.sin(2 * np.pi * i / max(frames, 2))))
            y = (height - ph) // 2
            canvas[y:y + ph, x:x + pw] = picture
            frame = av.VideoFrame.from_ndarray(canvas, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


async def run_demo(detector: SplitDetector, profile_name: str | None, seconds: float, output: str = "-",
                   workdir: Path | None = None) -> RunSummary:
    """Tail + agent over mutual TLS on 127.0.0.1; returns the agent's per-stage latency summary."""
    sink = JsonLinesSink(output)  # first: an output that cannot be opened is the only line, before the tail starts
    with contextlib.ExitStack() as closing:
        closing.callback(sink.close)
        return await _run_demo(detector, profile_name, seconds, output, sink,
                               Path(closing.enter_context(tempfile.TemporaryDirectory(prefix="frosted-demo-")))
                               if workdir is None else workdir)


async def _run_demo(detector: SplitDetector, profile_name: str | None, seconds: float, output: str,
                    sink: JsonLinesSink, folder: Path) -> RunSummary:
    """`run_demo` in ``folder`` (the clip, the throwaway certificates), its boxes to ``sink``."""
    clip = make_clip(folder / "astronaut.mp4", seconds)
    certs = throwaway_certificates(folder / "tls")
    profile = load_profile_for(detector, profile_name) if profile_name else None
    tails = served_tails(detector, [profile_name] if profile_name else [], serve_clean=profile is None)
    server = TailServer(tails, TailServerConfig(listen="127.0.0.1:0",  # the OS picks a free port
                                                tls=ServerTls(certs.server_cert, certs.server_key, certs.ca)))
    port = server.port
    await server.start()
    try:
        config = AgentConfig(
            tail={"address": f"127.0.0.1:{port}",
                  "tls": {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}},
            cameras=[{"id": "demo", "url": str(clip)}], noise={"disabled": profile is None}, output=output)
        backend = TorchHeadBackend(detector, profile, clean_fingerprint(detector.source))
        return await EdgeAgent(config, backend, sink).run()
    finally:
        await server.stop()


def demo_detector(weights: str | None, input_size: InputSize, threads: int | None,
                  split: str = DEFAULT_SPLIT, threshold: float = 0.7) -> SplitDetector:
    return load_detector(weights, input_size, PostprocessConfig(score_threshold=threshold), threads, split)
