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


@dataclass(frozen=True)
class GatedTail(ServedTail):
    """The real tail behind a gate the test opens: a frame stays inside the tail for as long as the test likes."""

    gate: threading.Event = field(default_factory=threading.Event)

    def detect_batch(self, activations: np.ndarray) -> list[np.ndarray]:
        self.gate.wait(60)
        return super().detect_batch(activations)


async def test_a_stream_that_sends_nothing_is_closed_as_idle(tails, noisy):
    activation, fingerprint = noisy
    gated = GatedTail(**{f.name: getattr(tails[fingerprint], f.name) for f in fields(ServedTail)})
    before = refused("idle")
    async with (running_tail({fingerprint: gated}, limits=StreamLimits(idle_timeout_seconds=0.3)) as server,
                stub_for(server.port) as stub):
        silent = stub.Detect(timeout=60)  # opens and never sends
        waiting = stub.Detect(timeout=60)  # sends one frame, then waits on the tail for its answer
        await waiting.write(frame(activation, fingerprint, 9))
        with pytest.raises(grpc.aio.AioRpcError) as closed:
            await silent.read()
        assert closed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no frame for 0.3 s" in closed.value.details()
        # the waiting stream sent nothing for as long, but a frame of its is in the tail: it is not idle
        gated.gate.set()
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
            await asyncio.gather(*(detect_all(stub, [frame(activation, fingerprint, 0)] * 3) for stub in hostile))
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
