"""Shared fixtures: the read-only ``shared/`` folder (weights, face sets, FDDB annotations) and a detector.

``shared/`` is found at ``$FROSTED_SHARED`` or beside the repository; tests that need it skip without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from facesplit.detector import SplitDetector
from facesplit.faceboxes import FaceBoxes
from facesplit.weights import load_faceboxes

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FROSTED_SHARED", REPO.parent / "shared"))
WEIGHTS = SHARED / "assets" / "faceboxes" / "FaceBoxesProd.pth"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (set FROSTED_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def weights_path(shared_dir: Path) -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"FaceBoxes weights not found at {WEIGHTS}")
    return WEIGHTS


@pytest.fixture(scope="session")
def faceboxes(weights_path: Path) -> FaceBoxes:
    return load_faceboxes(weights_path)


@pytest.fixture(scope="session")
def detector(faceboxes: FaceBoxes) -> SplitDetector:
    return SplitDetector(faceboxes)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test: thousands of tiny ops on a busy 2-core machine otherwise spend their
    time in the thread pool's barriers (test_noise.py's DCT test: 0.7 s on one thread, over 4 minutes on two while
    another job held the cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def face_recogniser() -> None:
    """Re-identification needs dlib and its models (the ``attack`` extra); skip those tests without them."""
    from privacy_attack.reid import RECOGNISER_FILE, ReidUnavailableError, model_file

    pytest.importorskip("dlib", reason="the attack extra is not installed: pip install -e '.[attack]'")
    try:
        model_file(RECOGNISER_FILE)
    except ReidUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def gst_rtsp() -> None:
    """The RTSP tests need GStreamer's RTSP server under Debian's python3 (make system-deps); skip without."""
    from tests.rig.servers import RigUnavailableError, check_gst_rtsp_server

    try:
        check_gst_rtsp_server()
    except RigUnavailableError as exc:
        pytest.skip(str(exc))


def run_frosted(*args: str, env: dict[str, str] | None = None,
                timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI the way a user does, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "frosted", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)
