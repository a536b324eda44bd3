"""Start and abuse real servers from tests and benchmarks (no pytest here).

``RtspServer`` runs ``tests/rig/rtsp_server.py`` under Debian's ``/usr/bin/python3`` (the interpreter that
has ``python3-gi``) and can kill, freeze and restart it on the same port, like a flaky camera.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


class RigUnavailableError(RuntimeError):
    """This machine lacks what a rig needs (e.g. GStreamer's RTSP server): skip, do not fail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_gst_rtsp_server() -> None:
    """Raise RigUnavailableError unless /usr/bin/python3 can import GStreamer's RTSP server bindings."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "missing = [e for e in ('x264enc', 'rtph264pay', 'pngdec', 'imagefreeze', 'videotestsrc') "
        "if Gst.ElementFactory.find(e) is None]; "
        "assert not missing, missing"
    )
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise RigUnavailableError(f"{SYSTEM_PYTHON} not found (the RTSP rig needs Debian's python3-gi)")
    result = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise RigUnavailableError(f"GStreamer RTSP server not usable from {SYSTEM_PYTHON}: {last}")


class RtspServer:
    """A gst-rtsp-server camera on 127.0.0.1 serving ``image_path`` (or a moving ball when None) as H.264."""

    def __init__(
        self,
        image_path: str | Path | None,
        width: int = 640,
        height: int = 480,
        fps: int = 15,
        port: int | None = None,
        mount: str = "/cam",
        video_path: str | Path | None = None,
    ) -> None:
        self.image_path = Path(image_path) if image_path is not None else None
        self.video_path = Path(video_path) if video_path is not None else None  # relayed without re-encoding
        self.width, self.height, self.fps = width, height, fps
        self.port = port or free_port()
        self.mount = mount
        self.process: subprocess.Popen[str] | None = None
        self.ready_at: float | None = None  # time.time() when the last start printed READY

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self, timeout: float = 10.0) -> RtspServer:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"RTSP server already running (pid {self.process.pid})")
        command = [SYSTEM_PYTHON, str(RTSP_SERVER_SCRIPT), "--port", str(self.port), "--mount", self.mount,
                   "--width", str(self.width), "--height", str(self.height), "--fps", str(self.fps)]
        if self.video_path is not None:
            command += ["--video", str(self.video_path)]
        else:
            command += ["--image", str(self.image_path)] if self.image_path else ["--pattern", "ball"]
        # stderr to a file: a pipe nobody drains would block a chatty server once it fills.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not selector.select(left):
                    break
                line = self.process.stdout.readline()
                if line.strip() == "READY":
                    self.ready_at = time.time()
                    return
                if not line:  # the server exited
                    self._stderr.seek(0)
                    stderr = self._stderr.read()
                    raise RuntimeError(f"RTSP server exited with {self.process.wait()}: {stderr.strip()[-500:]}")
        raise TimeoutError(f"RTSP server on port {self.port} not READY within {timeout} s")

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, like a camera losing power; waits until the process is gone."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()
            self._close_pipes()

    def stop_signal(self) -> None:
        """SIGSTOP: the connection stays open but nothing more is sent (a frozen camera)."""
        self._signal(signal.SIGSTOP)

    def cont(self) -> None:
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> RtspServer:
        """Kill (if running) and start again on the same port."""
        self.close()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server, whatever state it is in (a stopped process is continued so it can die)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self._signal(signal.SIGCONT)
            self.process.wait(timeout=10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        assert self.process is not None
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> RtspServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
