"""Build and run the tail's grpc.aio server: CloudTail + health + reflection, limits, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cloud_tail import metrics
from cloud_tail.batcher import Batcher
from cloud_tail.gate import ConnectionGate, GateBindError, bind_listening
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
        host, _, port = config.listen.rpartition(":")
        try:  # the tail's address is the gate's: gRPC listens on a loopback port behind it
            listeners = bind_listening(host.strip("[]"), int(port))
        except GateBindError as exc:
            raise ListenError(f"cannot listen on {config.listen} ({exc.strerror})") from None
        self.server = grpc.aio.server(options=grpc_options(config.limits))
        tail_pb2_grpc.add_CloudTailServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            self.server)
        try:
            if config.tls is None:
                upstream = self.server.add_insecure_port("127.0.0.1:0")
            else:
                upstream = self.server.add_secure_port("127.0.0.1:0", server_credentials(config.tls))
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        self.gate = ConnectionGate(listeners, upstream, config.limits.max_connections,
                                   config.limits.max_connections_per_client)
        self.service.peer_of = self.gate.peer_of
        self.port = self.gate.port

    async def start(self) -> None:
        metrics.count_tasks_of(asyncio.get_running_loop())
        self.batcher.start()
        await self.server.start()
        await self.gate.start()
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
        self.gate.stop_accepting()
        self.service.drain()
        await self.server.stop(self.config.drain_seconds)
        await self.gate.close()
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
