"""The tail's limits on streams over real gRPC on loopback: caps per connection and in total, idle streams
closed, and a hostile flood of streams that leaves the tail process's memory bounded."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from dataclasses import dataclass, field, fields

import grpc
import numpy as np
import pytest

from cloud_tail import metrics
from cloud_tail.models import ServedTail
from cloud_tail.service import StreamLimits
from tests.rig.servers import free_port
from tests.tail_helpers import (
    PROFILE,
    detect_all,
    frame,
    running_tail,
    start_tail_process,
    stub_for,
)
from tests.waiting import wait_until

_CALL_ENDED = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)


def refused(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("frosted_tail_streams_refused_total", {"reason": reason}) or 0.0


async def answered(call: grpc.aio.StreamStreamCall, message) -> int:
    await call.write(message)
    return (await call.read()).sequence


async def test_streams_over_the_caps_get_resource_exhausted_while_a_good_client_is_answered(tails, noisy):
    activation, fingerprint = noisy
    message = frame(activation, fingerprint, 3)
    limits = StreamLimits(max_streams=4, max_streams_per_connection=2)
    per_connection, total = refused("max_streams_per_connection"), refused("max_streams")
    async with (running_tail(tails, limits=limits) as server,
                stub_for(server.port, own_connection=True) as good,
                stub_for(server.port, own_connection=True) as busy,
                stub_for(server.port, own_connection=True) as other):
        good_call = good.Detect(timeout=120)
        assert await answered(good_call, message) == 3
        held = [busy.Detect(timeout=120), busy.Detect(timeout=120)]
        for call in held:
            assert await answered(call, message) == 3
        with pytest.raises(grpc.aio.AioRpcError) as over:  # a third stream on one connection
            await detect_all(busy, [message])
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per connection" in over.value.details()
        held.append(other.Detect(timeout=120))
        assert await answered(held[-1], message) == 3  # the 4th stream of the tail, on another connection
        with pytest.raises(grpc.aio.AioRpcError) as over:  # a 5th: over the tail's total
            await detect_all(other, [message])
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "4 streams" in over.value.details()
        assert await answered(good_call, frame(activation, fingerprint, 4)) == 4  # untouched by the refusals
        assert (refused("max_streams_per_connection"), refused("max_streams")) == (per_connection + 1, total + 1)
        # a stream that ends gives its slot back
        await held[0].done_writing()
        assert await held[0].code() == grpc.StatusCode.OK
        await wait_until(lambda: server.service.admission.open == 3, "the ended stream's slot to be free")
        assert [a.sequence for a in await detect_all(other, [message])] == [3]
        await good_call.done_writing()
        for call in held[1:]:
            await call.done_writing()


async def test_one_client_cannot_take_every_stream_however_many_connections_it_opens(tails, noisy):
    activation, fingerprint = noisy
    message = frame(activation, fingerprint, 3)
    before = refused("max_streams_per_client")
    limits = StreamLimits(max_streams=8, max_streams_per_connection=2, max_streams_per_client=3)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(running_tail(tails, limits=limits))
        stubs = [await stack.enter_async_context(stub_for(server.port, own_connection=True)) for _ in range(2)]
        held = [stubs[0].Detect(timeout=120), stubs[0].Detect(timeout=120), stubs[1].Detect(timeout=120)]
        for call in held:
            assert await answered(call, message) == 3
        with pytest.raises(grpc.aio.AioRpcError) as over:  # a 4th from 127.0.0.1, on a connection with room
            await detect_all(stubs[1], [message])
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 streams per client address (ipv4:127.0.0.1)" in over.value.details()
        assert "--max-streams-per-client" in over.value.details()  # what the operator raises
        assert refused("max_streams_per_client") == before + 1
        await held[0].done_writing()  # one ends: the client may open another
        await wait_until(lambda: server.service.admission.open == 2, "the ended stream's slot to be free")
        assert [a.sequence for a in await detect_all(stubs[1], [message])] == [3]
        for call in held[1:]:
            await call.done_writing()


async def test_health_watch_streams_are_capped_and_check_still_answers(tails):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cloud_tail.server import MAX_WATCHES

    async with running_tail(tails) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        async with channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest(service=f"name-{i}"), timeout=60)
                       for i in range(MAX_WATCHES)]
            for watch in watches:  # each answers at once, then stays open
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            over = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            with pytest.raises(grpc.aio.AioRpcError) as refused_watch:
                await over.read()
            assert refused_watch.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            watches[0].cancel()
            await wait_until(lambda: server.health.watching == MAX_WATCHES - 1, "the cancelled watch to end")
            again = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
            assert (await again.read()).status == health_pb2.HealthCheckResponse.SERVING
            for watch in [*watches, again]:
                watch.cancel()


@dataclass(frozen=True)
class GatedTail(ServedTail):
    """The real tail behind a gate the test opens: a frame stays inside the tail for as long as the test likes."""

    gate: threading.Event = field(default_factory=threading.Event)
    computed: list[float] = field(default_factory=list)  # each frame's first activation value, in compute order

    def detect_batch(self, activations: np.ndarray) -> list[np.ndarray]:
        self.gate.wait(60)
        self.computed.extend(float(a.flat[0]) for a in activations)
        return super().detect_batch(activations)


def gated(tails: dict[str, ServedTail], fingerprint: str) -> GatedTail:
    return GatedTail(**{f.name: getattr(tails[fingerprint], f.name) for f in fields(ServedTail)})


async def test_frames_of_streams_that_hang_up_are_dropped_not_held_and_computed(tails, noisy):
    """A client that sends and hangs up (or an agent that gives up on a deadline and reconnects) leaves nothing
    behind: its frames leave the batcher, and only the batch already computing is computed."""
    activation, fingerprint = noisy
    tail = gated(tails, fingerprint)
    async with (running_tail({fingerprint: tail}, max_batch=2) as server,
                stub_for(server.port, own_connection=True) as hostile, stub_for(server.port) as good):
        calls = [hostile.Detect(timeout=60) for _ in range(4)]
        for call in calls:
            for sequence in range(3):
                await call.write(frame(activation, fingerprint, sequence))
        # the first batch (1 or 2 frames, as they arrived) is at the gate, the rest wait
        await wait_until(lambda: server.batcher.queued() >= 10, "10 frames to wait behind the gated batch")
        computing = 12 - server.batcher.queued()
        for call in calls:
            call.cancel()
        await wait_until(lambda: server.service.admission.open == 0, "the hung-up streams to end")
        assert server.batcher.queued() == 0
        tail.gate.set()
        assert [a.sequence for a in await detect_all(good, [frame(activation, fingerprint, 7)])] == [7]
    assert len(tail.computed) == computing + 1  # the batch that was computing, and the good client's frame


async def test_a_camera_waits_behind_one_frame_of_a_flooding_stream_not_all_of_them(tails, noisy):
    activation, fingerprint = noisy
    tail = gated(tails, fingerprint)
    flood_value, camera_value = 1.0, 2.0
    async with (running_tail({fingerprint: tail}, max_batch=1) as server,
                stub_for(server.port, own_connection=True) as flooding, stub_for(server.port) as camera):
        flood = flooding.Detect(timeout=60)
        for sequence in range(8):  # the whole in-flight window
            await flood.write(frame(np.full_like(activation, flood_value), fingerprint, sequence))
        await wait_until(lambda: server.batcher.queued() == 7, "the flood's frames to wait behind its first")
        answer = asyncio.ensure_future(detect_all(camera, [frame(np.full_like(activation, camera_value),
                                                                 fingerprint, 0)]))
        await wait_until(lambda: server.batcher.queued() == 8, "the camera's frame to wait too")
        tail.gate.set()
        assert [a.sequence for a in await answer] == [0]
        for _ in range(8):
            await flood.read()
        await flood.done_writing()
    # in turn: the flood's frame computing, its next one, then the camera's; in arrival order it would be 9th
    assert tail.computed.index(camera_value) <= 2, tail.computed


async def test_a_stream_that_sends_nothing_is_closed_as_idle(tails, noisy):
    activation, fingerprint = noisy
    gated_tail = gated(tails, fingerprint)
    before = refused("idle")
    async with (running_tail({fingerprint: gated_tail}, limits=StreamLimits(idle_timeout_seconds=0.3)) as server,
                stub_for(server.port) as stub):
        silent = stub.Detect(timeout=60)  # opens and never sends
        waiting = stub.Detect(timeout=60)  # sends one frame, then waits on the tail for its answer
        await waiting.write(frame(activation, fingerprint, 9))
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await silent.read()
        assert closed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no frame for 0.3 s" in closed.value.details()
        # the waiting stream sent nothing for as long, but a frame of its is in the tail: it is not idle
        gated_tail.gate.set()
        assert (await waiting.read()).sequence == 9
        with pytest.raises(grpc.aio.AioRpcError) as closed:  # ... until it has nothing in the tail either
            await waiting.read()
        assert closed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: server.service.admission.open == 0, "the idle streams' slots to be free")
    assert refused("idle") == before + 2


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib / 1024


async def test_a_flood_of_streams_leaves_the_tail_process_bounded(noisy, weights_path):
    """500 streams from 10 connections, each sending a frame and never reading: 15 (the cap, less the good
    client's) are served, every other gets RESOURCE_EXHAUSTED, and the tail's memory stays put."""
    activation, fingerprint = noisy
    port = free_port()
    tail, _ = start_tail_process(port, "--weights", str(weights_path), "--insecure", "--noise", PROFILE, "--threads",
                                 "1", "--max-streams", "16", "--max-streams-per-connection", "8")
    try:
        message = frame(activation, fingerprint, 1)
        async with contextlib.AsyncExitStack() as stack:
            good, *hostile = [await stack.enter_async_context(stub_for(port, own_connection=True))
                              for _ in range(11)]
            # warm up first (batches of every size, each connection's buffers): the flood's cost is what is left
            await asyncio.gather(*(detect_all(stub, [frame(activation, fingerprint, s) for s in range(3)])
                                   for stub in hostile))
            good_call = good.Detect(timeout=240)
            assert await answered(good_call, frame(activation, fingerprint, 0)) == 0
            rss_before = rss_mib(tail.pid)
            rss_peak = rss_before
            calls = []
            for i in range(500):
                call = hostile[i % len(hostile)].Detect(timeout=240)
                with contextlib.suppress(*_CALL_ENDED):  # a refused stream may end before its frame is written
                    await call.write(message)
                calls.append(call)
                if i % 50 == 49:
                    rss_peak = max(rss_peak, rss_mib(tail.pid))
                if i == 250:
                    assert await answered(good_call, frame(activation, fingerprint, 2)) == 2
            outcomes: Counter = Counter()
            for call in calls:
                try:
                    outcomes[(await call.read()).sequence] += 1
                except grpc.aio.AioRpcError as exc:
                    outcomes[exc.code()] += 1
            rss_peak = max(rss_peak, rss_mib(tail.pid))
            assert await answered(good_call, frame(activation, fingerprint, 5)) == 5
            for call in calls:
                call.cancel()
    finally:
        tail.terminate()
        tail.wait(timeout=60)
    assert outcomes == {1: 15, grpc.StatusCode.RESOURCE_EXHAUSTED: 485}
    print(f"tail RSS {rss_before:.0f} -> peak {rss_peak:.0f} MiB over 500 streams")
    assert rss_peak - rss_before < 150, f"the tail grew {rss_peak - rss_before:.0f} MiB"
