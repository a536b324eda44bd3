"""Shared pieces for tests that talk to a real tail over loopback gRPC."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import torch

from cloud_tail.models import ServedTail, served_tails
from cloud_tail.server import ServerTls, TailServer, TailServerConfig
from cloud_tail.service import StreamLimits
from facesplit.detector import SplitDetector
from facesplit.images import sample_image
from facesplit.noise.profile import Obfuscator
from facesplit.noise.shipped import load_profile_for, resolve_profile
from facesplit.noise.validation import record_validation
from facesplit.preprocess import preprocess
from frosted_wire.codec import encode_tensor
from frosted_wire.v1 import tail_pb2, tail_pb2_grpc

PROFILE = "alpha-0.2"


def validated_copy(folder: Path, name: str, *precisions: str) -> Path:
    """A copy of shipped profile ``name`` (the same file name, so the same served name and fingerprint) whose
    header records a validation on heads at ``precisions``, as `bench/precision_accuracy.py --record` writes it:
    what a tail needs before it serves the profile to such heads. For the tests only: no AP was measured."""
    copy = folder / resolve_profile(name).name
    shutil.copy(resolve_profile(name), copy)
    for precision in precisions:
        record_validation(copy, precision, {"by": "a test"})
    return copy


def tails_for(detector: SplitDetector, runtime: str = "torch", threads: int | None = None,
              device: str = "cpu") -> dict[str, ServedTail]:
    return served_tails(detector, [PROFILE], serve_clean=True, runtime=runtime, threads=threads, device=device)


def noisy_activation(detector: SplitDetector, name: str = PROFILE) -> tuple[np.ndarray, str]:
    """The astronaut's noisy activation (C, H, W) float32 through profile ``name`` (``detector`` split where
    it was fitted) and the profile's fingerprint."""
    profile = load_profile_for(detector, name)
    x, _ = preprocess(sample_image("astronaut"), detector.input_size)
    with torch.inference_mode():
        activation = Obfuscator(profile)(detector.head(x))[0].contiguous().numpy()
    return activation, profile.fingerprint


def frame(activation: np.ndarray, fingerprint: str, sequence: int = 0, dtype: str = "float16",
          camera: str = "cam") -> tail_pb2.ActivationFrame:
    return tail_pb2.ActivationFrame(camera_id=camera, sequence=sequence, capture_time_unix_ns=1,
                                    profile_fingerprint=fingerprint, activation=encode_tensor(activation, dtype))


@contextlib.asynccontextmanager
async def running_tail(tails: dict[str, ServedTail], *, max_batch: int = 8, max_delay: float = 0.004,
                       limits: StreamLimits = StreamLimits(), tls: ServerTls | None = None
                       ) -> AsyncIterator[TailServer]:
    server = TailServer(tails, TailServerConfig(listen="127.0.0.1:0", max_batch=max_batch, max_delay=max_delay,
                                                limits=limits, tls=tls, drain_seconds=2.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def stub_for(port: int, credentials: grpc.ChannelCredentials | None = None, *, own_connection: bool = False,
                   ) -> AsyncIterator[tail_pb2_grpc.CloudTailStub]:
    """A stub on a channel to the tail; ``own_connection``: its own TCP connection (grpc otherwise shares one
    between channels of a process with the same target and options)."""
    target = f"127.0.0.1:{port}"
    options = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        yield tail_pb2_grpc.CloudTailStub(channel)


async def detect_all(stub: tail_pb2_grpc.CloudTailStub, frames: list[tail_pb2.ActivationFrame],
                     timeout: float = 60) -> list[tail_pb2.Detections]:
    call = stub.Detect(iter(frames), timeout=timeout)
    return [answer async for answer in call]


def start_tail_process(port: int, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """`frosted tail --listen 127.0.0.1:PORT ARGS...` in its own process, once it listens, and the lines it
    printed on stderr until then."""
    process = subprocess.Popen([sys.executable, "-m", "frosted", "tail", "--listen", f"127.0.0.1:{port}", *args],
                               cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True,
                               env=os.environ.copy())
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        lines.append(line.rstrip("\n"))
        if "tail listening" in line:
            # keep reading, so a chatty tail never blocks on a full pipe; later lines land in ``lines`` too
            threading.Thread(target=lambda: lines.extend(x.rstrip("\n") for x in process.stderr or ()),
                             daemon=True).start()
            return process, lines
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("tail did not start:\n" + "\n".join(lines[-30:]))

