"""The tail's front door: it accepts the TCP connections itself, caps them per client address before a byte
reaches gRPC, and relays each one, bytes untouched (TLS included), to the gRPC server on a loopback port.

gRPC counts a connection against its own limit from the accept, before the TLS handshake, and has no cap per
address: idle sockets from one host (no TLS, no bytes) held every slot and kept every other client out. Here a
host holds at most ``max_per_client`` connections, whatever it sends. The relay is a pair of protocols that
hand each chunk to the other side's transport and pause reading while that side's buffer is full, so a slow
reader holds its sender back as TCP would, with no task per connection.

When gRPC ends a connection, the client's side is ended as a server would end it: what gRPC said last (a TLS
alert refusing a certificate) is sent, then our side is shut for writing and what the client still sends is
read and dropped until it hangs up (for at most ``LINGER_SECONDS``). Closing at once, with the client's bytes
unread, resets the connection, and a reset can overtake the alert: the agent then read an outage, not a refusal.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import Counter
from dataclasses import dataclass

from cloud_tail import metrics

HIGH_WATER_BYTES = 256 << 10  # buffered toward one side before the other stops reading: about a frame
READ_BYTES = 256 << 10  # one read's most
LINGER_SECONDS = 2.0  # the longest a client's side stays open, read and dropped, after gRPC ended its connection


class GateBindError(OSError):
    """The address to serve on cannot be bound; the message says why."""


def peer_name(address: tuple[object, ...]) -> str:
    """A socket address in gRPC's peer-string form ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234")."""
    host, port = str(address[0]), address[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def bind_listening(host: str, port: int, backlog: int = 512) -> list[socket.socket]:
    """Sockets listening on ``host`` (an address, or a name, which can be several: "localhost" is 127.0.0.1 and
    ::1 where this host has IPv6) on one port: the first one's when ``port`` is 0. "[::]" takes IPv4 too, as
    gRPC's does. Raises GateBindError with the operating system's reason."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise GateBindError(exc.errno, exc.strerror) from None
    sockets: list[socket.socket] = []
    failure: OSError | None = None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
            if sockets:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            listener.bind(address)
            listener.listen(backlog)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            failure = failure or exc
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) and len(infos) > 1:
                continue  # one of a name's addresses this host lacks (no IPv6): the others serve
            for bound in sockets:
                bound.close()
            sockets = []
            break
        sockets.append(listener)
    if not sockets:
        assert failure is not None
        reason = failure.strerror or str(failure)
        if failure.errno == errno.EADDRINUSE:
            reason += "; is another tail running there?"
        raise GateBindError(failure.errno, reason)
    return sockets


@dataclass(eq=False)
class _Relay:
    """One client connection and its connection to gRPC."""

    client: str  # the client's address (no port): what the per-client cap counts
    peer: str  # the client's peer string, as gRPC would have named it
    downstream: asyncio.Transport
    upstream: asyncio.Transport | None = None
    upstream_ended: bool = False  # gRPC ended it: the client's side lingers, its bytes dropped


class _Side(asyncio.BufferedProtocol):
    """One side of a relay: what it receives is written to the other side; when its buffer toward its own
    peer is full, the other side stops reading; when it ends, so does the other. Each read lands in a buffer of
    its own, reused while the socket takes all of it at once (no bytes object per read)."""

    def __init__(self, gate: ConnectionGate, relay: _Relay | None = None) -> None:
        self.gate, self.relay = gate, relay
        self.transport: asyncio.Transport | None = None
        self._buffer: memoryview | None = None

    def _other(self) -> asyncio.Transport | None:
        if self.relay is None:
            return None
        return self.relay.upstream if self.transport is self.relay.downstream else self.relay.downstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER_BYTES)
        if self.relay is None:  # a client, just accepted
            self.relay = self.gate._admit(transport)
            if self.relay is not None:
                transport.pause_reading()  # until gRPC's side is up
                self.gate._connect_upstream(self.relay)
        elif self.relay.downstream.is_closing():  # the client hung up while this connected
            transport.close()
        else:  # gRPC's side of an admitted client
            self.relay.upstream = transport
            self.gate._register(self.relay)
            self.relay.downstream.resume_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._buffer is None:
            self._buffer = memoryview(bytearray(READ_BYTES))
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if (other := self._other()) is None or self._buffer is None or other.is_closing():
            return  # (a client's bytes after gRPC ended its connection: dropped)
        other.write(self._buffer[:nbytes])
        if other.get_write_buffer_size():  # some of it waits in the transport, perhaps as a view of this buffer
            self._buffer = None  # (Python 3.12 keeps the view): the next read gets a fresh one

    def pause_writing(self) -> None:
        if (other := self._other()) is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        if (other := self._other()) is not None:
            other.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.relay is None:  # refused
            return
        if self.transport is self.relay.downstream:
            if self.relay.upstream is not None:
                self.relay.upstream.close()
        else:
            self.gate._upstream_ended(self.relay)
        self.gate._ended(self.relay, self.transport)



class ConnectionGate:
    """Listens on the tail's address and relays each connection to ``127.0.0.1:upstream_port`` (gRPC), holding
    at most ``max_connections`` at once and ``max_per_client`` per client address; over either, a connection is
    closed at once (the client sees UNAVAILABLE and retries). ``peer_of`` turns the peer gRPC sees (this gate's
    loopback connection) back into the client's."""

    def __init__(self, listeners: list[socket.socket], upstream_port: int, max_connections: int,
                 max_per_client: int) -> None:
        self.listeners = listeners
        self.port = listeners[0].getsockname()[1]
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._per_client: Counter[str] = Counter()
        self._relays: set[_Relay] = set()
        self._peers: dict[str, str] = {}  # gRPC's peer string for a relayed connection -> the client's
        self._servers: list[asyncio.Server] = []
        self._connecting: set[asyncio.Future[None]] = set()

    @property
    def open(self) -> int:
        return len(self._relays)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            self._servers.append(await loop.create_server(self._accepted, sock=listener))

    def peer_of(self, grpc_peer: str) -> str:
        """The client behind ``grpc_peer``; ``grpc_peer`` itself for a connection that did not come through the
        gate (a process on this host dialling the loopback port)."""
        return self._peers.get(grpc_peer.replace("%5B", "[").replace("%5D", "]"), grpc_peer)

    def stop_accepting(self) -> None:
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        """Stop accepting, and close every relayed connection (after gRPC has said its goodbyes on them)."""
        self.stop_accepting()
        for relay in list(self._relays):
            for transport in (relay.downstream, relay.upstream):
                if transport is not None:
                    transport.close()
        for server in self._servers:
            await server.wait_closed()

    def _accepted(self) -> asyncio.Protocol:
        return _Side(self)

    def _admit(self, transport: asyncio.Transport) -> _Relay | None:
        peer = peer_name(transport.get_extra_info("peername"))
        client = peer.rsplit(":", 1)[0]
        if self.open >= self.max_connections:
            reason = "max_connections"
        elif self._per_client[client] >= self.max_per_client:
            reason = "max_connections_per_client"
        else:
            relay = _Relay(client, peer, transport)
            self._relays.add(relay)
            self._per_client[client] += 1
            metrics.CONNECTIONS.set(self.open)
            return relay
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        transport.abort()  # a reset: nothing of it lingers in TIME_WAIT here
        return None

    def _connect_upstream(self, relay: _Relay) -> None:
        async def connect() -> None:
            try:
                await asyncio.get_running_loop().create_connection(lambda: _Side(self, relay), "127.0.0.1",
                                                                   self.upstream_port)
            except OSError:  # gRPC is gone (the tail is stopping): the client reconnects elsewhere
                relay.downstream.close()

        task = asyncio.ensure_future(connect())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _upstream_ended(self, relay: _Relay) -> None:
        """gRPC ended ``relay``'s connection: end the client's side as gRPC would have (see the module's
        docstring), and close it for good after LINGER_SECONDS if the client never hangs up."""
        downstream = relay.downstream
        if relay.upstream_ended or downstream.is_closing():
            return
        relay.upstream_ended = True
        if not downstream.can_write_eof():
            downstream.close()
            return
        downstream.write_eof()  # after what gRPC wrote last
        downstream.resume_reading()  # what the client sends is read and dropped; its hang-up ends the relay
        asyncio.get_running_loop().call_later(LINGER_SECONDS, downstream.close)

    def _register(self, relay: _Relay) -> None:
        assert relay.upstream is not None
        self._peers[peer_name(relay.upstream.get_extra_info("sockname"))] = relay.peer

    def _ended(self, relay: _Relay, transport: asyncio.Transport | None) -> None:
        if relay.upstream is not None and transport is relay.upstream:
            self._peers.pop(peer_name(relay.upstream.get_extra_info("sockname")), None)
            return  # the client's side still counts against its cap until it is closed
        if relay in self._relays:
            self._relays.discard(relay)
            self._per_client[relay.client] -= 1
            if self._per_client[relay.client] <= 0:
                del self._per_client[relay.client]
            metrics.CONNECTIONS.set(self.open)
