"""The edge agent: many cameras, one compute thread for head + noise, one channel to the tail."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
from prometheus_client import start_http_server

from edge_agent import metrics
from edge_agent.backend import HeadBackend
from edge_agent.camera import CameraPipeline
from edge_agent.config import AgentConfig
from edge_agent.sink import JsonLinesSink
from edge_agent.sources import Backoff, open_source
from edge_agent.uplink import CameraStream, ClientTls, open_channel, tail_info
from facesplit.errors import FrostedError
from frosted_wire.codec import WIRE_DTYPES

log = logging.getLogger("edge_agent")


class TailMismatchError(FrostedError):
    """The tail answered, but does not serve what this agent sends."""


@dataclass
class StageSummary:
    count: int
    p50_ms: float
    p99_ms: float


@dataclass
class RunSummary:
    answered: dict[str, int] = field(default_factory=dict)  # camera -> frames answered
    dropped: dict[str, int] = field(default_factory=dict)  # camera -> frames replaced by newer ones
    stages: dict[str, StageSummary] = field(default_factory=dict)  # over all cameras

    def table(self) -> str:
        lines = [f"{'stage':<18} {'frames':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        lines += [f"{name:<18} {s.count:>7} {s.p50_ms:>8.2f} {s.p99_ms:>8.2f}" for name, s in self.stages.items()]
        for camera, answered in self.answered.items():
            lines.append(f"camera {camera}: {answered} frames answered, {self.dropped.get(camera, 0)} dropped "
                         "(keep-latest)")
        return "\n".join(lines)


def tls_from(config: AgentConfig) -> ClientTls | None:
    if config.tail.insecure:
        return None
    tls = config.tail.tls
    return ClientTls(tls.ca, tls.cert, tls.key, tls.server_name)


class EdgeAgent:
    def __init__(self, config: AgentConfig, backend: HeadBackend, sink: JsonLinesSink) -> None:
        self.config = config
        self.backend = backend
        self.sink = sink
        self.pipelines: list[CameraPipeline] = []

    async def check_tail(self, channel: grpc.aio.Channel) -> None:
        """Fail fast on a tail that answers but cannot serve us; a tail that is down is waited for."""
        try:
            info = await tail_info(channel, timeout=self.config.tail.deadline_seconds)
        except Exception as exc:
            log.warning("tail %s not reachable yet (%s); streams will connect when it is",
                        self.config.tail.address, str(exc).splitlines()[0][:200])
            return
        served = {p.fingerprint for p in info.profiles}
        if self.backend.fingerprint not in served:
            names = ", ".join(f"{p.name}" for p in info.profiles) or "nothing"
            raise TailMismatchError(f"tail {self.config.tail.address} does not serve this agent's profile "
                               f"(fingerprint {self.backend.fingerprint[:12]}...); it serves: {names}")
        if WIRE_DTYPES[self.config.tail.dtype] not in info.accepted_dtypes:
            raise TailMismatchError(f"tail {self.config.tail.address} does not accept dtype {self.config.tail.dtype}")

    async def run(self, seconds: float | None = None) -> RunSummary:
        """Run every camera until its source ends (files), ``seconds`` pass, or the task is cancelled."""
        config = self.config
        if config.metrics.port is not None:
            start_http_server(config.metrics.port, config.metrics.host, registry=metrics.REGISTRY)
        channel = open_channel(config.tail.address, tls_from(config))
        compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-compute")
        lane = asyncio.Lock()
        try:
            await self.check_tail(channel)
            timeouts = config.sources
            for camera in config.cameras:
                source = open_source(camera.url, realtime_files=True, open_timeout=timeouts.open_seconds,
                                     read_timeout=timeouts.read_seconds)
                stream = CameraStream(channel, camera.id, window=config.tail.window,
                                      deadline=config.tail.deadline_seconds,
                                      backoff=Backoff(timeouts.reconnect_initial_seconds,
                                                      timeouts.reconnect_max_seconds),
                                      on_reconnect=metrics.RECONNECTS.labels(camera.id, "uplink").inc)
                self.pipelines.append(CameraPipeline(camera.id, source, self.backend, stream, compute, self.sink,
                                                     Backoff(timeouts.reconnect_initial_seconds,
                                                             timeouts.reconnect_max_seconds), lane))
            runs = asyncio.gather(*(p.run() for p in self.pipelines))
            with contextlib.suppress(TimeoutError):  # --seconds elapsed: a normal end
                async with asyncio.timeout(seconds):
                    await runs
        finally:
            await channel.close()
            compute.shutdown(wait=True)
        return self.summary()

    def summary(self) -> RunSummary:
        summary = RunSummary()
        pooled: dict[str, list[float]] = {}
        for pipeline in self.pipelines:
            summary.answered[pipeline.camera_id] = pipeline.answered
            summary.dropped[pipeline.camera_id] = pipeline.slot.dropped
            for stage, values in pipeline.samples.items():
                pooled.setdefault(stage, []).extend(values)
        for stage in metrics.STAGES:
            values = pooled.get(stage)
            if values:
                ms = np.asarray(values) * 1000
                summary.stages[stage] = StageSummary(len(values), float(np.percentile(ms, 50)),
                                                     float(np.percentile(ms, 99)))
        return summary
