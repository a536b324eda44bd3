"""The edge agent: many cameras, one compute thread for head + noise, one channel to the tail (ours, or Triton)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from http.server import HTTPServer

from prometheus_client import start_http_server

from edge_agent import metrics
from edge_agent.backend import HeadBackend
from edge_agent.camera import CameraPipeline
from edge_agent.config import AgentConfig
from edge_agent.preview import PreviewBoard, PreviewServer
from edge_agent.sink import JsonLinesSink
from edge_agent.sources import Backoff, open_source
from edge_agent.summary import RunSummary, StageSummary, summarise
from edge_agent.tail_check import TailUnusableError, past_the_tails_limits, refusal_hint, wait_for_tail
from edge_agent.uplink import CameraStream, ClientTls, UplinkTransport, open_transport
from facesplit.errors import FrostedError
from frosted_wire.codec import WIRE_DTYPES
from frosted_wire.v1 import tail_pb2

__all__ = ["EdgeAgent", "MetricsError", "RunSummary", "StageSummary", "TailMismatchError", "TailUnusableError"]

log = logging.getLogger("edge_agent")


class TailMismatchError(TailUnusableError):
    """The tail answered, but does not serve what this agent sends."""


class MetricsError(FrostedError):
    """The /metrics endpoint cannot listen where the config says."""


def tls_from(config: AgentConfig) -> ClientTls | None:
    if config.tail.insecure:
        return None
    tls = config.tail.tls
    return ClientTls(tls.ca, tls.cert, tls.key, tls.server_name)


def triton_model_for(config: AgentConfig) -> str:
    """The Triton model that serves this agent's profile (`triton_wire.names`), for ``triton://HOST:PORT``."""
    from facesplit.noise.shipped import split_for
    from triton_wire.names import ensemble_name

    if config.noise.disabled:
        return ensemble_name(None, split_for(config.model.split, []), config.model.precision)
    return ensemble_name(profile_of(config), "", config.model.precision)


def profile_of(config: AgentConfig) -> str:
    """The name of the profile whose noise this agent adds ("clean": none)."""
    from facesplit.noise.shipped import resolve_profile

    return "clean" if config.noise.disabled else resolve_profile(config.noise.profile).stem


class EdgeAgent:
    def __init__(self, config: AgentConfig, backend: HeadBackend, sink: JsonLinesSink) -> None:
        self.config = config
        self.backend = backend
        self.sink = sink
        self.pipelines: list[CameraPipeline] = []
        self.stopping = False
        self._tail_ok = asyncio.Event()  # streams open only once the tail said it serves this agent
        self._tail_failure: str | None = None  # the tail check's last failed attempt, in words
        self.preview: PreviewServer | None = None  # the live preview page, when preview.port is set

    def stop(self, reason: str = "stop requested") -> None:
        """Drain: take no new frames, let the frames in flight be answered (each stream's deadline bounds the
        wait), then `run` returns its summary. Safe to call from a signal handler on the loop."""
        if self.stopping:
            return
        self.stopping = True
        in_flight = sum(p.stream.in_flight for p in self.pipelines)
        log.info("%s: stopping; no new frames, waiting for the %d in flight", reason, in_flight)
        for pipeline in self.pipelines:
            pipeline.stop()

    def check_served(self, info: tail_pb2.TailInfo) -> None:
        """Fail fast on a tail that answers but cannot serve this agent's profile or wire dtype."""
        address = self.config.tail.address
        served = {p.fingerprint for p in info.profiles}
        if self.backend.fingerprint not in served:
            names = ", ".join(f"{p.name}" for p in info.profiles) or "nothing"
            raise TailMismatchError(f"tail {address} does not serve this agent's profile "
                                    f"(fingerprint {self.backend.fingerprint[:12]}...); it serves: {names}")
        if WIRE_DTYPES[self.config.tail.dtype] not in info.accepted_dtypes:
            raise TailMismatchError(f"tail {address} does not accept dtype {self.config.tail.dtype}")

    async def run(self, seconds: float | None = None) -> RunSummary:
        """Run every camera until its source ends (files), ``seconds`` pass or `stop` is called (both drain),
        or the task is cancelled (frames in flight are abandoned)."""
        config = self.config
        metrics.count_tasks_of(asyncio.get_running_loop())
        metrics.declare_head(config.model.runtime, config.model.device, config.model.precision, profile_of(config))
        metrics_server = self._serve_metrics()
        channel = open_transport(config.tail.address, tls_from(config), lambda: triton_model_for(config))
        compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compute")
        lane = asyncio.Lock()
        try:
            timeouts = config.sources
            for camera in config.cameras:
                source = open_source(camera.url, realtime_files=True, open_timeout=timeouts.open_seconds,
                                     read_timeout=timeouts.read_seconds)
                stream = CameraStream(channel, camera.id, window=config.tail.window,
                                      deadline=config.tail.deadline_seconds,
                                      backoff=Backoff(timeouts.reconnect_initial_seconds,
                                                      timeouts.reconnect_max_seconds),
                                      on_reconnect=metrics.RECONNECTS.labels(camera.id, "uplink").inc,
                                      ready=self._tail_ok)
                self.pipelines.append(CameraPipeline(camera.id, source, self.backend, stream, compute, self.sink,
                                                     Backoff(timeouts.reconnect_initial_seconds,
                                                             timeouts.reconnect_max_seconds), lane))
            if self.stopping:  # stopped before the cameras existed
                for pipeline in self.pipelines:
                    pipeline.stop()
            await self._serve_preview()
            await self._supervise(channel, seconds)
        finally:
            if self.preview is not None:
                await self.preview.stop()
            await channel.close()
            compute.shutdown(wait=True)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        return self.summary()

    async def _supervise(self, channel: UplinkTransport, seconds: float | None) -> None:
        """Until every camera is done; the first failure (a camera's, or a tail that refuses us) ends them all.

        The tail check runs beside the cameras, not before them, so a file that ends while the tail is still
        down ends the agent too."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        checker = asyncio.create_task(self._check_tail(channel), name="tail-check")
        runs = [asyncio.create_task(p.run(), name=f"camera-{p.camera_id}") for p in self.pipelines]
        pending: set[asyncio.Task[None]] = {checker, *runs}
        try:
            while not all(run.done() for run in runs):
                timeout = None if deadline is None or self.stopping else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    self.stop(f"--seconds {seconds:g} elapsed")
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
        finally:
            for task in (checker, *runs):
                task.cancel()
            await asyncio.gather(checker, *runs, return_exceptions=True)

    async def _check_tail(self, channel: UplinkTransport) -> None:
        tail = self.config.tail
        timeouts = self.config.sources
        info = await wait_for_tail(channel, tail.address, timeout=tail.deadline_seconds,
                                   backoff=Backoff(timeouts.reconnect_initial_seconds, timeouts.reconnect_max_seconds),
                                   refusal=refusal_hint(tail.insecure, tail.tls.cert is not None),
                                   on_failure=self._tail_failed)
        self.check_served(info)
        for held_back in past_the_tails_limits(info, len(self.pipelines), tail.window, tail.address):
            log.warning("%s", held_back)
        self._tail_ok.set()

    def _tail_failed(self, reason: str) -> None:
        self._tail_failure = " ".join(reason.split())  # one line, for the CLI's one-line error

    async def _serve_preview(self) -> None:
        preview = self.config.preview
        if preview.port is None:
            return
        board = PreviewBoard(preview.fps)
        for pipeline in self.pipelines:
            board.watch(pipeline)
        server = PreviewServer(board, preview.host, preview.port)
        await server.start()  # PreviewError (one line) when it cannot listen; it then holds nothing
        self.preview = server

    def _serve_metrics(self) -> HTTPServer | None:
        host, port = self.config.metrics.host, self.config.metrics.port
        if port is None:
            return None
        try:
            server, _ = start_http_server(port, host, registry=metrics.REGISTRY)
        except UnicodeError:  # the resolver's, for a label past 63 characters
            raise MetricsError(f"metrics: cannot serve on {host[:80]}:{port} (not a host name)") from None
        except OSError as exc:  # the port is taken, the host does not resolve or is not this machine's
            raise MetricsError(f"metrics: cannot serve on {host}:{port} ({exc.strerror or exc})") from None
        return server

    def summary(self) -> RunSummary:
        problem = None
        if not self._tail_ok.is_set():
            address = self.config.tail.address
            problem = (f"the tail {address} was not reachable (last: {self._tail_failure})" if self._tail_failure
                       else f"the tail {address} had not answered the agent's check yet")
        return summarise(self.pipelines, problem)
