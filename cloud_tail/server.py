"""Build and run the tail's grpc.aio server: CloudTail + health + reflection, limits, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_tail import metrics
from cloud_tail.batcher import Batcher
from cloud_tail.models import ServedTail
from cloud_tail.service import CloudTailService, StreamLimits
from cloud_tail.tls import ServerTls, load_server_tls
from facesplit.errors import ConflictError, FrostedError
from frosted_wire.v1 import tail_pb2, tail_pb2_grpc

log = logging.getLogger("cloud_tail")

SERVICE_NAME = tail_pb2.DESCRIPTOR.services_by_name["CloudTail"].full_name


@dataclass(frozen=True)
class TailServerConfig:
    listen: str = "127.0.0.1:50051"
    max_batch: int = 8
    max_delay: float = 0.004
    limits: StreamLimits = field(default_factory=StreamLimits)
    tls: ServerTls | None = None  # None: plaintext (the CLI asks for --insecure)
    drain_seconds: float = 5.0


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Credentials from checked material: TlsConfigError names a bad file, instead of a tail that starts and
    then fails every handshake."""
    material = load_server_tls(tls)
    return grpc.ssl_server_credentials([(material.key, material.cert)], root_certificates=material.client_ca,
                                       require_client_auth=material.client_ca is not None)


# Streams of other methods (GetInfo, health, reflection) a connection may open beside a full set of Detect streams.
_SIDE_STREAMS = 4
_HANDSHAKE_SECONDS = 10  # a connection that never finishes its TLS handshake holds a slot this long, not 120 s


def grpc_options(limits: StreamLimits) -> list[tuple[str, int]]:
    """The server's channel arguments: message sizes and the transport's share of the stream limits."""
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second tail on the same port must fail, not share it
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS bounds every method's streams (health Watch and reflection stay
        # open too), with room for one Detect stream over the cap so that one gets RESOURCE_EXHAUSTED from
        # the service instead of waiting, unseen, in the client's queue.
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection + 1 + _SIDE_STREAMS),
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        # a connection with no stream at all goes after the same time as an idle stream (0 would mean never)
        ("grpc.max_connection_idle_ms", max(1, round(limits.idle_timeout_seconds * 1000))),
        ("grpc.server_handshake_timeout_ms", _HANDSHAKE_SECONDS * 1000),
    ]


MAX_WATCHES = 16  # health Watch streams at once, all clients together


class CappedHealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 with its Watch streams capped. A Watch never ends, so it holds its connection open past the
    idle limit: uncapped, a client opening one per connection takes every connection the tail allows, and
    each service name watched adds a condition. Check (what Kubernetes' gRPC probe calls) is not limited."""

    def __init__(self, max_watches: int = MAX_WATCHES) -> None:
        super().__init__()
        self.max_watches = max_watches
        self.watching = 0

    async def Watch(self, request: health_pb2.HealthCheckRequest,  # noqa: N802 - the RPC's name
                    context: grpc.aio.ServicerContext) -> None:
        if self.watching >= self.max_watches:
            metrics.STREAMS_REFUSED.labels("watches").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the tail allows {self.max_watches} health Watch streams at once; poll Check instead")
        self.watching += 1
        try:
            await super().Watch(request, context)
        finally:
            self.watching -= 1


class ListenError(FrostedError):
    """The address to serve on is taken or invalid."""


class LimitsError(ConflictError):
    """Limits under which the tail could accept no frame at all (--max-message-bytes and the profiles served)."""


# Everything in a frame but its tensor data (camera id <= 128 characters, fingerprint, shape, scale, numbers).
_FRAME_HEADER_BYTES = 1024


def check_limits(tails: dict[str, ServedTail], limits: StreamLimits) -> None:
    """A message limit below the smallest frame (int8) would refuse every frame as RESOURCE_EXHAUSTED."""
    for tail in tails.values():
        smallest = math.prod(tail.activation_shape) + _FRAME_HEADER_BYTES
        if limits.max_message_bytes < smallest:
            raise LimitsError(f"the message limit ({limits.max_message_bytes} bytes, --max-message-bytes) is smaller "
                              f"than one int8 frame of {tail.served_as} ({smallest} bytes): no frame would get through")


class TailServer:
    """A running tail: ``await start()``, ``port``, ``await stop()`` (drains in-flight frames first).
    Construct it inside the event loop that will run it (grpc.aio binds to the running loop)."""

    def __init__(self, tails: dict[str, ServedTail], config: TailServerConfig) -> None:
        check_limits(tails, config.limits)
        self.config = config
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tail-compute")
        self.batcher = Batcher(self.executor, config.max_batch, config.max_delay)
        self.service = CloudTailService(tails, self.batcher, config.limits)
        self.health = CappedHealthServicer()
        self._stopped = False
        self.server = grpc.aio.server(options=grpc_options(config.limits))
        tail_pb2_grpc.add_CloudTailServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            self.server)
        # asked of the OS first: gRPC's failure is an ERROR line of its own and "Failed to bind", without why
        if (refused := _why_not_bound(config.listen)) is not None:
            raise ListenError(f"cannot listen on {config.listen} ({refused})")
        try:
            if config.tls is None:
                self.port = self.server.add_insecure_port(config.listen)
            else:
                self.port = self.server.add_secure_port(config.listen, server_credentials(config.tls))
        except RuntimeError as exc:  # grpc says only "Failed to bind"
            raise ListenError(f"cannot listen on {config.listen} ({exc})") from None

    async def start(self) -> None:
        metrics.count_tasks_of(asyncio.get_running_loop())
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


async def serve(tails: dict[str, ServedTail], config: TailServerConfig,
                bound: Callable[[], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then drain: the `frosted tail` verb. ``bound`` runs once the address is the
    tail's (what it serves is said then, so a port in use is the only line)."""
    server = TailServer(tails, config)
    if bound is not None:
        bound()
    await server.serve_until_signal()


def _why_not_bound(listen: str) -> str | None:
    """The operating system's reason the address cannot be bound, or None: a socket bound the way gRPC binds
    its own (SO_REUSEADDR: a port whose last connections are in TIME_WAIT is free), then closed."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("localhost", "", "0.0.0.0", "::"):
        return None  # names and wildcards gRPC resolves to several addresses: left to gRPC
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            reason += "; is another tail running there?"
        return reason
    return None
