"""The cloud tail over real gRPC on loopback: answers, validation, isolation between streams, TLS, drain."""

from __future__ import annotations

import asyncio
import random

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud_tail import metrics
from cloud_tail.models import served_tails
from cloud_tail.server import ServerTls
from cloud_tail.service import StreamLimits
from facesplit.detector import at_split
from facesplit.images import sample_image
from frosted_wire.certs import throwaway_certificates
from frosted_wire.v1 import tail_pb2
from tests.tail_helpers import PROFILE, detect_all, frame, noisy_activation, running_tail, stub_for
from tests.waiting import DEADLINE, wait_until


def accepted_frames() -> float:
    """Frames the tail has read and accepted so far, in this process (its Prometheus counter)."""
    return metrics.REGISTRY.get_sample_value("frosted_tail_frames_total", {"outcome": "accepted"}) or 0.0


async def test_get_info_health_and_reflection(tails):
    async with running_tail(tails) as server, stub_for(server.port) as stub:
        info = await stub.GetInfo(tail_pb2.GetInfoRequest(), timeout=10)
        assert {p.fingerprint for p in info.profiles} == set(tails)
        assert {p.name for p in info.profiles} == {"clean", "alpha-0.2"}
        assert list(info.profiles[0].activation_shape) == [128, 32, 32]
        assert set(info.accepted_dtypes) == {tail_pb2.FLOAT16, tail_pb2.INT8, tail_pb2.FLOAT32}
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        async with channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="frosted_wire.v1.CloudTail"), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
            names = {s.name async for r in reflect for s in r.list_services_response.service}
            assert {"frosted_wire.v1.CloudTail", "grpc.health.v1.Health"} <= names


async def test_noisy_frames_get_the_astronauts_face_in_order(tails, noisy, service_detector):
    activation, fingerprint = noisy
    async with running_tail(tails) as server, stub_for(server.port) as stub:
        answers = await detect_all(stub, [frame(activation, fingerprint, seq) for seq in range(5)]
                                   + [frame(activation, fingerprint, 5, dtype="int8")])
    assert [a.sequence for a in answers] == list(range(6))
    # The same activation through the tail in-process: the wire (fp16/int8) must not move the face.
    local = tails[fingerprint].detect_batch(activation[None])[0]
    assert len(local) == 1
    for answer in answers:
        assert len(answer.boxes) == 1
        box = answer.boxes[0]
        assert np.allclose([box.x1, box.y1, box.x2, box.y2], local[0, :4], atol=3.0)
        assert box.score > 0.5
        assert answer.timings.batch_size >= 1 and answer.timings.compute_seconds > 0
    # astronaut is 512x512, letterboxed by 2x into the 1024 input: her face sits near (330-470, 140-330)
    assert 300 < (answers[0].boxes[0].x1 + answers[0].boxes[0].x2) / 2 < 500


def _corrupt(activation: np.ndarray, fingerprint: str) -> dict[str, tuple[tail_pb2.ActivationFrame, grpc.StatusCode]]:
    good = frame(activation, fingerprint)
    cases = {}

    def variant(name: str, code: grpc.StatusCode, edit) -> None:
        message = tail_pb2.ActivationFrame()
        message.CopyFrom(good)
        edit(message)
        cases[name] = (message, code)

    invalid, unknown = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    variant("unknown dtype", invalid, lambda m: setattr(m.activation, "dtype", 99))
    variant("unspecified dtype", invalid, lambda m: setattr(m.activation, "dtype", 0))
    variant("wrong shape", invalid, lambda m: m.activation.shape.__setitem__(0, 64))
    variant("short data", invalid, lambda m: setattr(m.activation, "data", m.activation.data[:-2]))
    nan = activation.copy()
    nan[3, 4, 5] = np.nan
    variant("NaN", invalid, lambda m: m.activation.CopyFrom(frame(nan, fingerprint).activation))
    inf = activation.copy()
    inf[0, 0, 0] = np.inf
    variant("Inf", invalid, lambda m: m.activation.CopyFrom(frame(inf, fingerprint).activation))
    variant("int8 without scale", invalid, lambda m: m.activation.CopyFrom(
        tail_pb2.Tensor(dtype=tail_pb2.INT8, shape=[128, 32, 32], data=bytes(128 * 32 * 32))))
    variant("int8 scale that overflows to inf", invalid, lambda m: m.activation.CopyFrom(
        tail_pb2.Tensor(dtype=tail_pb2.INT8, shape=[128, 32, 32], data=bytes([127]) * (128 * 32 * 32), scale=1e38)))
    huge = activation.copy()
    huge[1, 2, 3] = 1e30
    variant("float32 beyond float16's range", invalid, lambda m: m.activation.CopyFrom(
        frame(huge, fingerprint, dtype="float32").activation))
    variant("no activation", invalid, lambda m: m.ClearField("activation"))
    variant("no camera id", invalid, lambda m: setattr(m, "camera_id", ""))
    variant("unknown fingerprint", unknown, lambda m: setattr(m, "profile_fingerprint", "f" * 32))
    # the frame before it on the stream is `good` itself: camera "cam", sequence 0
    variant("repeated sequence", invalid, lambda m: None)
    variant("another camera on the stream", invalid, lambda m: (setattr(m, "camera_id", "other"),
                                                                setattr(m, "sequence", 1)))
    return cases


async def test_one_tail_serves_profiles_fitted_at_different_splits(service_detector):
    """Each profile is served at its own split: an edge that ends its head after the Inception blocks and
    one that ends it after the RDCL send the same wire shape to one tail, and both get the face back."""
    deep = "inception3-alpha-0.4"
    tails = served_tails(service_detector, [PROFILE, deep], serve_clean=False)
    assert sorted(t.detector.split for t in tails.values()) == ["inception3", "rdcl"]
    frames = [noisy_activation(service_detector, PROFILE), noisy_activation(at_split(service_detector, "inception3"),
                                                                             deep)]
    async with running_tail(tails) as server, stub_for(server.port) as stub:
        answers = await detect_all(stub, [frame(a, f, seq) for seq, (a, f) in enumerate(frames)])
    assert [a.sequence for a in answers] == [0, 1]
    # Fresh noise can add a second, weaker box at the deep split now and then; the face must be the best one.
    best = [max(a.boxes, key=lambda b: b.score) for a in answers if a.boxes]
    assert len(best) == 2 and all(300 < (b.x1 + b.x2) / 2 < 500 and b.score > 0.5 for b in best)


async def test_malformed_frames_get_their_status_and_other_streams_keep_going(tails, noisy):
    activation, fingerprint = noisy
    async with running_tail(tails) as server, stub_for(server.port) as stub:
        good_call = stub.Detect(timeout=120)
        for sequence, (name, (message, code)) in enumerate(_corrupt(activation, fingerprint).items(), start=1):
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await detect_all(stub, [frame(activation, fingerprint, 0), message])
            assert failure.value.code() == code, name
            # the long-lived good stream is still answered after each bad one
            await good_call.write(frame(activation, fingerprint, sequence))
            answer = await good_call.read()
            assert len(answer.boxes) == 1, name
        oversized = frame(np.zeros((128, 32, 32), np.float32), fingerprint, dtype="float32")
        oversized.activation.data = bytes(2 << 20)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await detect_all(stub, [oversized])
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await good_call.write(frame(activation, fingerprint, 1000))
        assert (await good_call.read()).sequence == 1000
        await good_call.done_writing()


async def test_a_stream_that_breaks_its_order_is_answered_up_to_the_break(tails, noisy):
    """Answers name their frames by sequence: a stream whose sequence goes back gets the answers to the frames
    before, then INVALID_ARGUMENT saying which sequence followed which."""
    activation, fingerprint = noisy
    async with running_tail(tails) as server, stub_for(server.port) as stub:
        call = stub.Detect(iter([frame(activation, fingerprint, s) for s in (5, 9, 7)]), timeout=60)
        answered = []
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for answer in call:
                answered.append(answer.sequence)
        assert answered == [5, 9]
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "sequence 7 after 9" in failure.value.details()


async def test_a_flooding_stream_does_not_starve_another(tails, noisy):
    activation, fingerprint = noisy
    message = frame(activation, fingerprint)
    async with running_tail(tails, limits=StreamLimits(max_in_flight=4)) as server, stub_for(server.port) as stub:
        flood = stub.Detect(timeout=120)

        async def write_forever() -> None:
            while True:  # never reads its answers: HTTP/2 flow control must hold it back
                await flood.write(message)
                message.sequence += 1

        accepted = accepted_frames()
        flooder = asyncio.create_task(write_forever())
        await wait_until(lambda: accepted_frames() >= accepted + 4, "the flood to fill its window in the tail")
        # a starved stream would wait forever: the call's deadline fails it
        answers = await detect_all(stub, [frame(activation, fingerprint, s) for s in range(3)], timeout=DEADLINE)
        flooder.cancel()
        flood.cancel()
        assert [a.sequence for a in answers] == [0, 1, 2]


async def test_fuzz_thousands_of_random_messages_then_still_healthy(tails, noisy):
    activation, fingerprint = noisy
    rng = random.Random(1234)
    async with running_tail(tails) as server:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        async with channel:
            # Raw bytes, not valid protobuf, straight onto the Detect method.
            raw = channel.stream_stream("/frosted_wire.v1.CloudTail/Detect", request_serializer=None,
                                        response_deserializer=None)
            codes = set()
            for i in range(2000):
                length = rng.choice([0, 1, 7, 100, 4096, 300_000])
                payload = rng.randbytes(length)
                if i % 2:  # half of them: structurally valid protobuf with random field values
                    payload = tail_pb2.ActivationFrame(
                        camera_id=rng.choice(["", "c", "x" * 300]), sequence=rng.getrandbits(64),
                        profile_fingerprint=rng.choice([fingerprint, "", "nope"]),
                        activation=tail_pb2.Tensor(dtype=rng.randrange(-3, 6),
                                                   shape=[rng.randrange(0, 200) for _ in range(rng.randrange(4))],
                                                   data=rng.randbytes(rng.choice([0, 10, 262144])),
                                                   scale=rng.choice([0.0, -1.0, float("nan"), 0.1])),
                    ).SerializeToString()
                try:
                    async for _ in raw(iter([payload]), timeout=10):
                        pass
                    codes.add(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    codes.add(exc.code())
            assert grpc.StatusCode.INTERNAL not in codes and grpc.StatusCode.UNKNOWN not in codes, codes
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with stub_for(server.port) as stub:
            answers = await detect_all(stub, [frame(activation, fingerprint, 7)])
            assert answers[0].sequence == 7 and len(answers[0].boxes) == 1


async def test_batching_across_streams(tails, noisy):
    activation, fingerprint = noisy
    async with running_tail(tails, max_batch=8, max_delay=0.02) as server, stub_for(server.port) as stub:
        results = await asyncio.gather(*(detect_all(stub, [frame(activation, fingerprint, s, camera=f"c{c}")
                                                           for s in range(4)]) for c in range(4)))
    sizes = [a.timings.batch_size for answers in results for a in answers]
    assert max(sizes) > 1, sizes
    assert all(len(a.boxes) == 1 for answers in results for a in answers)


async def test_mutual_tls_refuses_a_client_without_a_certificate(tails, noisy, tmp_path):
    activation, fingerprint = noisy
    certs = throwaway_certificates(tmp_path / "tls")
    other = throwaway_certificates(tmp_path / "other", ca_name="someone else's CA")
    tls = ServerTls(certs.server_cert, certs.server_key, client_ca=certs.ca)
    async with running_tail(tails, tls=tls) as server:
        trusted = grpc.ssl_channel_credentials(certs.ca.read_bytes(), certs.client_key.read_bytes(),
                                               certs.client_cert.read_bytes())
        async with stub_for(server.port, trusted) as stub:
            answers = await detect_all(stub, [frame(activation, fingerprint)])
            assert len(answers[0].boxes) == 1
        for credentials in (grpc.ssl_channel_credentials(certs.ca.read_bytes()),  # no client certificate
                            grpc.ssl_channel_credentials(certs.ca.read_bytes(), other.client_key.read_bytes(),
                                                         other.client_cert.read_bytes())):  # untrusted issuer
            async with stub_for(server.port, credentials) as stub:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.GetInfo(tail_pb2.GetInfoRequest(), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_shutdown_drains_in_flight_frames(tails, noisy):
    activation, fingerprint = noisy
    async with running_tail(tails, max_batch=1) as server, stub_for(server.port) as stub:
        call = stub.Detect(timeout=60)
        accepted = accepted_frames()
        for s in range(4):
            await call.write(frame(activation, fingerprint, s))
        await wait_until(lambda: accepted_frames() >= accepted + 4, "the tail to read them")
        stopping = asyncio.create_task(server.stop())
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while (answer := await call.read()) is not grpc.aio.EOF:
                received.append(answer.sequence)
        await stopping
    assert received == [0, 1, 2, 3]
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


def test_astronaut_sample_is_available():
    assert sample_image("astronaut").shape == (512, 512, 3)
