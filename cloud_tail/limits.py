"""What one tail admits, and its defaults: apart from the service (gRPC) so `frosted tail --help` can show
the defaults without importing gRPC or torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamLimits:
    max_in_flight: int = 8  # frames of one stream being batched/computed at once; the rest wait in HTTP/2
    max_message_bytes: int = 1 << 20
    # Each stream can hold max_in_flight decoded frames (~4 MB at the defaults): the caps bound the tail's memory.
    # One agent sends all its cameras over one connection, so the per-connection cap is its camera limit.
    max_streams: int = 64
    max_streams_per_connection: int = 32
    # One client address (an agent, or a site behind NAT) may hold no more, however many connections it opens, so
    # that one client cannot take every stream of the tail.
    max_streams_per_client: int = 32
    # TCP connections, counted from the accept (before TLS) by the tail's gate (cloud_tail/gate.py), which closes
    # the ones over a cap (the client sees UNAVAILABLE): in total, and per client address, so that idle sockets
    # from one host cannot hold them all. A site's agents share its address: room for each and its reconnects.
    max_connections: int = 128
    max_connections_per_client: int = 16
    idle_timeout_seconds: float = 60.0  # a stream with no frame (and none in the tail) this long is closed
