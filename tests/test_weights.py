"""Finding, checking and downloading the weights (the download from a real HTTP server on loopback)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from facesplit.weights import OFFICIAL_SHA256, WeightsError, download_weights, load_faceboxes, resolve_weights
from tests.conftest import REPO, invoke_frosted
from tests.waiting import wait_until_sync


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # a short poll: shutdown() waits for the loop to look (0.5 s by default, per test)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FROSTED_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match="frosted weights download"):
        resolve_weights()
    monkeypatch.setenv("FROSTED_WEIGHTS", str(weights_path))
    assert resolve_weights() == weights_path
    with pytest.raises(WeightsError, match=r"explicit\.pth.*--weights"):
        resolve_weights(tmp_path / "explicit.pth")


def test_wrong_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    other = tmp_path / "other.pth"
    torch.save({"conv1.conv.weight": torch.zeros(24, 3, 5, 5), "fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError) as info:
        load_faceboxes(other)
    message = str(info.value)
    assert "\n" not in message and "not a FaceBoxes checkpoint" in message
    assert "missing" in message and "unexpected fc.weight" in message
    assert "wrong shape for conv1.conv.weight" in message
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        load_faceboxes(garbage)


def test_download_verifies_sha256(http_dir: tuple[Path, str], weights_path: Path, tmp_path: Path) -> None:
    root, url = http_dir
    shutil.copy(weights_path, root / "FaceBoxesProd.pth")
    (root / "tampered.pth").write_bytes(weights_path.read_bytes()[:-1] + b"\x00")
    saved = download_weights(f"{url}/FaceBoxesProd.pth", tmp_path / "cache" / "w.pth")
    assert saved.read_bytes() == weights_path.read_bytes()
    target = tmp_path / "cache2" / "w.pth"
    with pytest.raises(WeightsError, match=f"expected {OFFICIAL_SHA256}"):
        download_weights(f"{url}/tampered.pth", target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written left
    with pytest.raises(WeightsError, match=r"404|Not Found"):
        download_weights(f"{url}/absent.pth", target)


def test_download_cli_fills_the_cache(http_dir: tuple[Path, str], weights_path: Path, tmp_path: Path) -> None:
    root, url = http_dir
    shutil.copy(weights_path, root / "FaceBoxesProd.pth")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "FROSTED_WEIGHTS": ""}
    result = invoke_frosted("weights", "download", "--url", f"{url}/FaceBoxesProd.pth", env=env)
    assert result.returncode == 0, result.stderr
    cached = tmp_path / "cache" / "frosted" / "FaceBoxesProd.pth"
    assert result.stdout.strip() == str(cached) and cached.is_file()
    check = invoke_frosted("weights", "check", env=env)  # every verb now finds them with no flag
    assert check.returncode == 0 and "(official)" in check.stdout
    bad = invoke_frosted("weights", "download", "--url", f"{url}/absent.pth", env=env)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_a_file_pinned_by_a_custom_sha256_that_is_no_checkpoint_is_not_saved(http_dir: tuple[Path, str],
                                                                               tmp_path: Path) -> None:
    root, url = http_dir
    (root / "photo.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    digest = hashlib.sha256((root / "photo.pth").read_bytes()).hexdigest()
    target = tmp_path / "cache" / "w.pth"
    result = invoke_frosted("weights", "download", "--url", f"{url}/photo.pth", "--sha256", digest,
                            "--out", str(target))
    assert result.returncode == 1 and "not a readable PyTorch checkpoint" in result.stderr, result.stderr
    assert "nothing was saved" in result.stderr and ".partial" not in result.stderr
    assert not target.exists() and list(target.parent.iterdir()) == []  # it was saved, then refused, before
    result = invoke_frosted("weights", "download", "--url", f"{url}/photo.pth", "--sha256", "xyz")
    assert result.returncode == 2 and "'xyz' is not a sha256 (64 hex digits)" in result.stderr


class HostileServer(http.server.BaseHTTPRequestHandler):
    """Answers as a hostile or broken server would, by path."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path.startswith("/loop"):
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
            elif self.path.startswith("/endless"):  # no length, never ends
                self.send_response(200)
                self.end_headers()
                while True:
                    self.wfile.write(bytes(1 << 16))
            elif self.path.startswith("/announces"):
                self.send_response(200)
                self.send_header("Content-Length", str(2 << 30))
                self.end_headers()
                self.wfile.write(bytes(1 << 16))
            elif self.path.startswith("/drip"):  # a byte at a time: each read well within any read timeout
                self.send_response(200)
                self.send_header("Content-Length", "1000")
                self.end_headers()
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            else:
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should


@pytest.fixture()
def hostile_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("path, timeout_s, said", [
    ("/loop", 30.0, r"failed: more than 5 redirects$"),
    ("/endless", 60.0, r"more than a checkpoint's 67108864 bytes; nothing was saved"),
    ("/announces", 30.0, r"the server announces 2147483648 bytes, more than a checkpoint's"),
    ("/drip", 1.0, r"failed: not complete within 1 s"),
    ("/garbage", 30.0, r"failed: HTTP 400 Bad status line"),
])
def test_a_hostile_server_is_one_line_and_leaves_nothing(hostile_url: str, tmp_path: Path, path: str,
                                                         timeout_s: float, said: str) -> None:
    """Bounded in bytes and in time however the server paces its answer, and never the URL's secrets."""
    target = tmp_path / "cache" / "w.pth"
    url = hostile_url.replace("http://", "http://someone:hunter2@") + path + "?token=abc123&x=1"
    with pytest.raises(WeightsError, match=said) as caught:
        download_weights(url, target, timeout_s=timeout_s)
    message = str(caught.value)
    assert "\n" not in message and "hunter2" not in message and "abc123" not in message
    assert "token=***&x=1" in message
    assert list(target.parent.iterdir()) == []  # no partial file


def test_sigterm_mid_download_exits_143_and_leaves_no_partial_file(hostile_url: str, tmp_path: Path) -> None:
    """As `timeout`, `docker stop` or Kubernetes end a process: the partial file goes, as on Ctrl-C."""
    target = tmp_path / "cache" / "w.pth"
    process = subprocess.Popen([sys.executable, "-m", "frosted", "weights", "download", "--url",
                                f"{hostile_url}/drip", "--out", str(target)], cwd=REPO, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_until_sync(lambda: any(target.parent.glob(".w.pth.*.partial")), "the download to be under way")
        process.send_signal(signal.SIGTERM)
        wait_until_sync(lambda: process.poll() is not None, "the terminated download to exit")
        assert process.stderr is not None
        assert process.returncode == 143 and process.stderr.read().strip().splitlines()[-1] == "Terminated."
    finally:
        process.kill()
        process.wait()
    assert list(target.parent.iterdir()) == []


def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"only http:// and https:// URLs are fetched"):
        download_weights("file:///dev/zero", tmp_path / "w.pth")
    result = invoke_frosted("weights", "download", "--url", "file:///dev/zero", "--out", str(tmp_path / "w.pth"))
    assert result.returncode == 2 and "only http:// and https:// URLs are fetched" in result.stderr
    assert not (tmp_path / "w.pth").exists()


def test_a_folder_given_as_the_weights_says_so(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=f"^{tmp_path} \\(from --weights\\) is a folder: give the checkpoint file"):
        resolve_weights(tmp_path)


def test_weights_are_saved_only_as_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "w.pth"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match=r"w\.pth: not a regular file; the checkpoint is saved as one"):
        download_weights("http://127.0.0.1:1/w.pth", fifo)


def test_a_checkpoint_that_inflates_past_any_faceboxes_is_refused_unread(tmp_path: Path) -> None:
    """torch's checkpoints are zips: a few hundred kilobytes of one can unpack to gigabytes (628 MB measured)."""
    import zipfile

    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(80 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(WeightsError, match=r"bomb\.pth: 83886080 bytes unpacked, more than a FaceBoxes "
                                           r"checkpoint's 67108864: not these weights"):
        load_faceboxes(bomb)


def test_a_pickle_that_would_run_code_is_one_line_and_runs_nothing(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):  # what a hostile checkpoint does: call something on load
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"conv1.conv.weight": Payload()}, protocol=4))
    result = invoke_frosted("weights", "check", "--weights", str(evil))
    assert result.returncode == 1 and not marker.exists()
    assert result.stderr.strip().splitlines() == [  # torch's pickle-protocol UserWarning is not the user's
        f"Error: {evil}: not a readable PyTorch checkpoint (UnpicklingError)"], result.stderr
