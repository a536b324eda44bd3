"""The tail's gate (cloud_tail/gate.py) over real loopback sockets: bytes relayed whole both ways, the client
behind each relayed connection named, and connections capped per client address before any byte reaches gRPC,
so that idle sockets from one host no longer keep every other client out.

Hostile clients dial from 127.0.0.2-4 (all of 127/8 is loopback on Linux), the good client from 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from cloud_tail import gate as gate_module
from cloud_tail import metrics
from cloud_tail.gate import ConnectionGate, bind_listening, peer_name
from cloud_tail.server import TailServer, TailServerConfig
from cloud_tail.service import StreamLimits
from frosted_wire.v1 import tail_pb2_grpc
from tests.tail_helpers import detect_all, frame, running_tail, stub_for
from tests.waiting import wait_until


def refused(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("frosted_tail_connections_refused_total", {"reason": reason}) or 0.0


def connections_open() -> float:
    return metrics.REGISTRY.get_sample_value("frosted_tail_connections") or 0.0


def from_address(source: str, port: int) -> socket.socket:
    """A connected TCP socket to the tail, dialled from ``source``."""
    dialled = socket.socket()
    dialled.bind((source, 0))
    dialled.connect(("127.0.0.1", port))
    return dialled


@contextlib.contextmanager
def silent_sockets(source: str, port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source`` that send nothing: a TLS handshake that never starts."""
    held = [from_address(source, port) for _ in range(count)]
    try:
        yield held
    finally:
        for dialled in held:
            dialled.close()


def was_reset(dialled: socket.socket) -> bool:
    """Whether the gate closed ``dialled`` (without reading: a held connection just times out here)."""
    dialled.settimeout(0.05)
    try:
        return dialled.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.asynccontextmanager
async def gate_over_echo(max_connections: int = 8, max_per_client: int = 4) -> AsyncIterator[ConnectionGate]:
    """A gate in front of a server that first says which client the gate names for it, then echoes."""
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()  # the client's first bytes: the gate relays none before it knows the client
        writer.write((gate.peer_of(peer_name(writer.get_extra_info("peername"))) + "\n").encode())
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    gate = ConnectionGate(bind_listening("127.0.0.1", 0), server.sockets[0].getsockname()[1], max_connections,
                          max_per_client)
    await gate.start()
    try:
        yield gate
    finally:
        await gate.close()
        server.close()


async def test_a_connection_the_server_ends_ends_with_its_last_words_not_a_reset(monkeypatch):
    """A tail refusing a client certificate sends a TLS alert and closes while the agent is still sending; had
    the gate closed the client's side with those bytes unread, the reset overtook the alert and the agent took
    a refusal for an outage. The client reads the server's last words, then an end, and still counts against
    its cap until it hangs up."""
    async def refusing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(1 << 16)  # the client is mid-send
        writer.write(b"refused\n")
        writer.write_eof()  # then an orderly end, reading on until the gate's side ends (as gRPC does)
        while await reader.read(1 << 16):
            pass
        writer.close()

    server = await asyncio.start_server(refusing, "127.0.0.1", 0)
    gate = ConnectionGate(bind_listening("127.0.0.1", 0), server.sockets[0].getsockname()[1], 8, 4)
    await gate.start()
    try:
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
            writer.write(os.urandom(4 << 20))
            assert await reader.read() == b"refused\n"  # a reset raises ConnectionResetError here
            assert gate.open == 1  # lingering: still this client's
            writer.close()
            await wait_until(lambda: gate.open == 0, "the relay to end when the client hangs up")
        # a client that never hangs up is closed once it has lingered its time
        monkeypatch.setattr(gate_module, "LINGER_SECONDS", 0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
        writer.write(os.urandom(1 << 17))
        assert await reader.read() == b"refused\n"
        await wait_until(lambda: gate.open == 0, "the gate to close a lingering client")
        writer.close()
    finally:
        await gate.close()
        server.close()


async def test_the_gate_relays_bytes_whole_both_ways_and_names_the_client_behind_each_connection():
    async with gate_over_echo() as gate:
        dialled = from_address("127.0.0.2", gate.port)
        dialled.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=dialled)
        writer.write(b"hello\n")
        assert (await reader.readline()).decode().strip() == f"ipv4:127.0.0.2:{dialled.getsockname()[1]}"
        payload = os.urandom(24 << 20)  # far past both sides' buffers: the relay must pause and resume reading

        async def send() -> None:
            writer.write(payload)
            await writer.drain()

        _, echoed = await asyncio.gather(send(), reader.readexactly(len(payload)))
        assert echoed == payload
        writer.close()
        await wait_until(lambda: gate.open == 0, "the relay to end with its client")
        assert gate.peer_of("ipv4:127.0.0.1:1") == "ipv4:127.0.0.1:1"  # not through the gate: itself


async def test_idle_sockets_from_one_host_take_only_its_share_and_a_good_client_is_served(tails, noisy):
    """What held every slot of gRPC's own limit: silent connections, re-opened as they close. Through the gate
    one host holds at most its per-client share; the rest are reset at once and counted, and a new connection
    from elsewhere is answered while the host keeps its sockets open."""
    activation, fingerprint = noisy
    limits = StreamLimits(max_connections=8, max_connections_per_client=3)
    per_client, total = refused("max_connections_per_client"), refused("max_connections")
    async with running_tail(tails, limits=limits) as server:
        with silent_sockets("127.0.0.2", server.port, 20) as flood:
            await wait_until(lambda: refused("max_connections_per_client") >= per_client + 17,
                             "the gate to refuse the host's connections past its 3")
            assert sum(was_reset(s) for s in flood) == 17
            async with stub_for(server.port, own_connection=True) as good:
                answers = await detect_all(good, [frame(activation, fingerprint, s) for s in range(3)])
                assert [a.sequence for a in answers] == [0, 1, 2]
            # the good client's slot is freed when the gate sees it hang up, which can come after the next
            # hosts dial in: counted then, it would take one of theirs and leave seven held
            await wait_until(lambda: server.gate.open == 3, "the good client's connection to be released")
            # more hosts fill the total (3 + 3 + 2 of 8), and the next connection from anywhere is refused
            with silent_sockets("127.0.0.3", server.port, 3), silent_sockets("127.0.0.4", server.port, 2):
                await wait_until(lambda: server.gate.open == 8, "eight connections held")
                with silent_sockets("127.0.0.5", server.port, 1) as late:
                    await wait_until(lambda: refused("max_connections") >= total + 1, "the total cap")
                    assert was_reset(late[0])
        await wait_until(lambda: server.gate.open == 0 and connections_open() == 0,
                         "every slot free once the hosts hang up")
        async with stub_for(server.port, own_connection=True) as good:
            assert [a.sequence for a in await detect_all(good, [frame(activation, fingerprint, 7)])] == [7]


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
async def test_the_tail_caps_streams_by_the_client_behind_the_gate_not_by_the_gate(tails, noisy):
    """Every connection reaches gRPC from the gate's loopback address: were the client behind it not known,
    a client on ::1 and one on 127.0.0.1 would be one client, and one stream each would be over a cap of 1. The
    tail listens on [::], as in a pod: IPv4 clients arrive on the same socket."""
    activation, fingerprint = noisy
    limits = StreamLimits(max_streams_per_client=1)
    server = TailServer(tails, TailServerConfig(listen="[::]:0", limits=limits, drain_seconds=2.0))
    await server.start()
    try:
        calls = []
        for target in (f"[::1]:{server.port}", f"127.0.0.1:{server.port}"):
            channel = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            call = tail_pb2_grpc.CloudTailStub(channel).Detect(timeout=60)
            await call.write(frame(activation, fingerprint, 1))
            assert (await call.read()).sequence == 1, target  # both admitted: two clients
            calls.append((channel, call))
        channel = grpc.aio.insecure_channel(f"[::1]:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)])
        with pytest.raises(grpc.aio.AioRpcError) as over:  # a second stream of the ::1 client is over its cap
            await detect_all(tail_pb2_grpc.CloudTailStub(channel), [frame(activation, fingerprint, 2)])
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "ipv6:[::1]" in over.value.details()
        calls.append((channel, None))
        for channel, call in calls:
            if call is not None:
                await call.done_writing()
            await channel.close()
    finally:
        await server.stop()
