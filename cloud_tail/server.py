"""Build and run the tail's grpc.aio server: CloudTail + health + reflection, limits, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_tail.batcher import Batcher
from cloud_tail.models import ServedTail
from cloud_tail.service import CloudTailService, StreamLimits
from facesplit.errors import FrostedError
from frosted_wire.v1 import tail_pb2, tail_pb2_grpc

log = logging.getLogger("cloud_tail")

SERVICE_NAME = tail_pb2.DESCRIPTOR.services_by_name["CloudTail"].full_name


@dataclass(frozen=True)
class ServerTls:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: mutual TLS, clients must present a certificate signed by it


@dataclass(frozen=True)
class TailServerConfig:
    listen: str = "127.0.0.1:50051"
    max_batch: int = 8
    max_delay: float = 0.004
    limits: StreamLimits = field(default_factory=StreamLimits)
    tls: ServerTls | None = None  # None: plaintext (the CLI asks for --insecure)
    drain_seconds: float = 5.0


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    root = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials([(tls.key.read_bytes(), tls.cert.read_bytes())], root_certificates=root,
                                       require_client_auth=tls.client_ca is not None)


class ListenError(FrostedError):
    """The address to serve on is taken or invalid."""


class TailServer:
    """A running tail: ``await start()``, ``port``, ``await stop()`` (drains in-flight frames first).
    Construct it inside the event loop that will run it (grpc.aio binds to the running loop)."""

    def __init__(self, tails: dict[str, ServedTail], config: TailServerConfig) -> None:
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tail-compute")
        self.batcher = Batcher(self.executor, config.max_batch, config.max_delay)
        self.service = CloudTailService(tails, self.batcher, config.limits)
        self.health = health.aio.HealthServicer()
        self._stopped = False
        limit = config.limits.max_message_bytes
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second tail on the same port must fail, not share it
        ])
        tail_pb2_grpc.add_CloudTailServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            self.server)
        try:
            if config.tls is None:
                self.port = self.server.add_insecure_port(config.listen)
            else:
                self.port = self.server.add_secure_port(config.listen, server_credentials(config.tls))
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise ListenError(f"cannot listen on {config.listen} ({exc}); is another tail running there?") from None

    async def start(self) -> None:
        self.batcher.start()
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("tail listening on %s (%s)", self.config.listen.rsplit(":", 1)[0] + f":{self.port}",
                 "TLS" if self.config.tls else "plaintext")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.service.drain()
        await self.server.stop(self.config.drain_seconds)
        await self.batcher.close()
        self.executor.shutdown(wait=True)

    async def serve_until_signal(self) -> None:
        """Run until SIGINT/SIGTERM, then drain and stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("draining in-flight frames")
        await self.stop()


async def serve(tails: dict[str, ServedTail], config: TailServerConfig) -> None:
    """Serve until SIGINT/SIGTERM, then drain: the `frosted tail` verb."""
    await TailServer(tails, config).serve_until_signal()
