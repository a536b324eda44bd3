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
from facesplit.postprocess import PostprocessConfig
from facesplit.weights import load_faceboxes
from frosted_wire.certs import CertFiles, throwaway_certificates

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
    """Run the installed CLI the way a user does, in a fresh process: for what only a process shows (startup
    imports, signals, a real exit status from the interpreter). It costs a Python and torch import, seconds on
    a busy machine: the quick loop's other CLI tests use `invoke_frosted`."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "frosted", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=REPO)


def invoke_frosted(*args: str, env: dict[str, str | None] | None = None,
                   cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`run_frosted` in this process, through click's CliRunner: the same `frosted` group (one-line errors,
    exit statuses: click's standalone mode, as `frosted.cli:main` runs it), the same stdout and stderr apart,
    and the same answer shape, without a fresh interpreter per call. As in a fresh process, the working folder
    is ``cwd``, ``env`` is added to the environment (None: unset), the verbs' logging goes to this run's stderr,
    and an exception that escapes the verb lands on stderr as a traceback with exit status 1; torch's thread
    count, the logging set-up and the working folder are put back afterwards. Only from tests that are not
    coroutines (tail, edge and demo call asyncio.run), and only for runs that end by themselves: a verb that
    serves until stopped would block the test (see `refuse_to_serve`)."""
    import logging
    import traceback

    import torch
    from click.testing import CliRunner

    from frosted.cli import cli

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("aioice", "aiortc")}  # frosted.logs sets them
    threads = torch.get_num_threads()  # --threads sets torch's, for the process
    previous = os.getcwd()
    root.handlers.clear()  # no handler, as in a fresh process: setup_logging's basicConfig logs to this stderr
    try:
        os.chdir(cwd)
        result = CliRunner().invoke(cli, list(args), env=env, prog_name="frosted")
    finally:
        os.chdir(previous)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)
        torch.set_num_threads(threads)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit) and result.exc_info:
        stderr += "".join(traceback.format_exception(*result.exc_info))  # what the interpreter would print
    return subprocess.CompletedProcess(["frosted", *args], result.exit_code, result.stdout, stderr)


@pytest.fixture
def refuse_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """For `invoke_frosted("tail", ...)` runs that must fail before the tail listens: one that gets as far as
    serving fails at once (a traceback, exit status 1) instead of serving until the test's timeout."""
    import cloud_tail.server

    async def serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tail started serving")

    monkeypatch.setattr(cloud_tail.server, "serve", serve)


# Shared by the edge's TLS tests (a CA with its tail and client certificates, and a second, unrelated CA) and
# the tail's service tests (the service's detector, its tails, a noisy activation): one copy each.
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return throwaway_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return throwaway_certificates(tmp_path_factory.mktemp("other"), ca_name="someone else's CA")


@pytest.fixture(scope="module")
def service_detector(faceboxes: FaceBoxes) -> SplitDetector:
    return SplitDetector(faceboxes, postprocess=PostprocessConfig(score_threshold=0.5))


@pytest.fixture(scope="module")
def tails(service_detector: SplitDetector):
    from tests.tail_helpers import tails_for

    return tails_for(service_detector)


@pytest.fixture(scope="module")
def noisy(service_detector: SplitDetector):
    from tests.tail_helpers import noisy_activation

    return noisy_activation(service_detector)


def write_one_face_set(folder: Path) -> None:
    """A COCO set of one 64x64 image with one face (``labels.json``, ``images/``) and saved detections that
    find it (``det.jsonl``): enough for the eval verb's option handling."""
    import cv2
    import numpy as np

    (folder / "images").mkdir()
    cv2.imwrite(str(folder / "images" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    (folder / "labels.json").write_text(
        '{"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 64}], "categories": [{"id": 1}], '
        '"annotations": [{"id": 1, "image_id": 1, "bbox": [10, 10, 20, 20], "category_id": 1}]}')
    (folder / "det.jsonl").write_text('{"image": "a.png", "boxes": [[10, 10, 30, 30, 0.9]]}\n')
