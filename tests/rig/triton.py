"""A real NVIDIA Triton Inference Server on 127.0.0.1, from nvidia-pytriton's bundled ``tritonserver`` (python
backend only; TESTRIG.md), serving a model repository: start, kill, start again on the same ports.

pytriton ships the python backend's stub per Python version beside the backend; the server wants it inside
the backend folder. It is copied, with the backend, into a folder of our own (the installed package is left
as it is), and the stub finds the CUDA runtime it links against in ``nvidia_pytriton.libs`` through
``LD_LIBRARY_PATH`` (its RPATH assumes the package's own layout). The stub runs this venv's Python (its ``bin``
first on ``PATH``), so the python-backend models see this venv's numpy and onnxruntime. No pytest here.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.rig.servers import RigUnavailableError, free_port


def triton_install() -> Path:
    """pytriton's ``tritonserver`` folder; RigUnavailableError when nvidia-pytriton is not installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise RigUnavailableError("nvidia-pytriton is not installed (make install puts it in the venv)")
    root = Path(spec.origin).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise RigUnavailableError(f"{root}/bin/tritonserver not found in nvidia-pytriton")
    return root


class TritonServer:
    """``tritonserver`` on 127.0.0.1 (gRPC, HTTP and metrics ports picked once and kept across restarts)."""

    def __init__(self, repository: Path, models: list[str] | None = None, *, log: Path | None = None,
                 tls: tuple[Path, Path, Path | None] | None = None) -> None:
        self.root = triton_install()
        self.repository = repository
        self.models = models  # None: every model in the repository; else only these (and what they call)
        self.tls = tls  # gRPC over TLS: (certificate, key, client CA: mutual TLS when given)
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.work = Path(tempfile.mkdtemp(prefix="tritonserver-"))  # the backends and the log; gone on close
        self.log = log or self.work / "tritonserver.log"
        self.backends = self.work / "backends"
        self._install_python_backend()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def _install_python_backend(self) -> None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = self.root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise RigUnavailableError(f"nvidia-pytriton has no python backend stub for Python {version}")
        target = self.backends / "python"
        shutil.copytree(self.root / "backends" / "python", target, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, target / "triton_python_backend_stub")

    def command(self) -> list[str]:
        # every address flag, always: without them tritonserver listens on 0.0.0.0
        command = [str(self.root / "bin" / "tritonserver"), f"--model-repository={self.repository}",
                   f"--backend-directory={self.backends}",
                   "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                   "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                   "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
                   "--exit-timeout-secs=2",
                   # as the k8s Deployment (overlays/triton): the summaries its HPA and the dashboard read
                   "--metrics-config=summary_latencies=true"]
        if self.models is not None:
            command += ["--model-control-mode=explicit", *(f"--load-model={name}" for name in self.models)]
        if self.tls is not None:
            cert, key, client_ca = self.tls
            command += ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
            if client_ca is not None:
                command += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={client_ca}"]
        return command

    def environment(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        libs = self.root.parent.parent / "nvidia_pytriton.libs"
        return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
                "LD_LIBRARY_PATH": f"{libs}{os.pathsep}{os.environ.get('LD_LIBRARY_PATH', '')}"}

    def start(self, timeout: float = 120.0) -> TritonServer:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"tritonserver already running (pid {self.process.pid})")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment(), start_new_session=True)
        atexit.register(self.kill)  # its own session: a test run cut short must not leave it serving
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tritonserver not ready within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def statistics(self, model: str) -> dict:
        """Triton's inference statistics of ``model`` (``/v2/models/NAME/stats``)."""
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{model}/stats"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.loads(reply.read())["model_stats"][0]

    def batch_sizes(self, model: str) -> dict[int, int]:
        """Batch size -> how many batches of it ``model`` has computed since the server started."""
        return {int(b["batch_size"]): int(b["compute_infer"]["count"])
                for b in self.statistics(model).get("batch_stats", [])}

    def kill(self) -> None:
        """SIGKILL the server and its python-backend stubs (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
