"""The uplink transport to NVIDIA Triton (KServe v2 gRPC, ``tail: triton://HOST:PORT``): the tail `frosted export
triton` wrote, served by Triton instead of `frosted tail`.

A camera's stream is one ``ModelStreamInfer`` call to the profile's ensemble: each frame one request (its id the
frame's sequence), each answer the boxes of one frame. The window, deadlines and reconnects are
`edge_agent.uplink.CameraStream`'s, as for our own tail. Before any stream opens, the agent checks the model's
``fingerprint`` parameter (from its ``ModelConfig``) as it checks our tail's ``GetInfo``: `describe` answers in
``GetInfo``'s terms, so the refusal is the same line.

What Triton does not send back: the tail's queue and compute time and batch size per frame (the answers have no
``timings``, so the agent records no tail stages for them; Triton's own metrics,
``nv_inference_queue_duration_us`` and ``nv_inference_compute_infer_duration_us``, have them).
"""

from __future__ import annotations

import grpc
import numpy as np

from edge_agent.uplink import UplinkError, peer_text
from frosted_wire.codec import WIRE_DTYPES, decode_tensor
from frosted_wire.v1 import tail_pb2
from triton_wire import grpc_service_pb2 as kserve
from triton_wire import grpc_service_pb2_grpc as kserve_grpc
from triton_wire.names import COMPOSING_SUFFIXES

ACTIVATION, BOXES, BOX_COUNT = "activation", "boxes", "box_count"  # cloud_tail.triton_repository's names


class TritonSession:
    """One camera's ``ModelStreamInfer`` stream to one model."""

    def __init__(self, call: grpc.aio.StreamStreamCall, model: str) -> None:
        self.call = call
        self.model = model

    async def write(self, frame: tail_pb2.ActivationFrame) -> None:
        await self.call.write(infer_request(self.model, frame))

    async def read(self) -> tail_pb2.Detections | None:
        answer = await self.call.read()
        if answer is grpc.aio.EOF:
            return None
        if answer.error_message:  # Triton reports a failed request in the stream, and keeps it open
            raise UplinkError(grpc.StatusCode.INTERNAL, f"Triton: {peer_text(answer.error_message)}")
        return detections(answer.infer_response)

    def cancel(self) -> None:
        self.call.cancel()


class TritonTransport:
    """Frames to one Triton model (the profile's ensemble) on ``channel``."""

    def __init__(self, channel: grpc.aio.Channel, address: str, model: str) -> None:
        self.channel = channel
        self.address = address
        self.model = model
        self.stub = kserve_grpc.GRPCInferenceServiceStub(channel)

    async def wait_ready(self) -> None:
        await self.channel.channel_ready()

    async def describe(self, timeout: float) -> tail_pb2.TailInfo:
        """The model's fingerprint as `GetInfo` would give it; a model Triton does not have is answered with
        the models it does serve (no fingerprint: none matches), so the agent's refusal lists them."""
        accepted = list(WIRE_DTYPES.values())  # this transport sends FP16 whatever the agent encoded
        try:
            reply = await self.stub.ModelConfig(kserve.ModelConfigRequest(name=self.model), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
            index = await self.stub.RepositoryIndex(kserve.RepositoryIndexRequest(ready=True), timeout=timeout)
            names = sorted(m.name for m in index.models if not m.name.endswith(COMPOSING_SUFFIXES))
            return tail_pb2.TailInfo(profiles=[tail_pb2.ServedProfile(name=name) for name in names],
                                     accepted_dtypes=accepted)
        parameters = reply.config.parameters
        fingerprint = parameters["fingerprint"].string_value if "fingerprint" in parameters else ""
        served = tail_pb2.ServedProfile(fingerprint=fingerprint,
                                        name=f"{self.model} (fingerprint {fingerprint[:12] or 'none'}...)")
        return tail_pb2.TailInfo(profiles=[served], accepted_dtypes=accepted,
                                 max_batch_size=reply.config.max_batch_size)

    def open(self, camera_id: str) -> TritonSession:
        return TritonSession(self.stub.ModelStreamInfer(), self.model)

    async def close(self) -> None:
        await self.channel.close()


def infer_request(model: str, frame: tail_pb2.ActivationFrame) -> kserve.ModelInferRequest:
    """One frame as a KServe v2 request: the activation as an FP16 batch of one (the ensemble's input)."""
    tensor = frame.activation
    shape = tuple(tensor.shape)
    # FP16 is the ensemble's dtype: its bytes go as they are; int8 (scaled) or float32 are decoded with every
    # check our tail makes, then sent as FP16
    raw = (tensor.data if tensor.dtype == tail_pb2.FLOAT16
           else decode_tensor(tensor, shape).astype(np.float16).tobytes())
    request = kserve.ModelInferRequest(model_name=model, id=str(frame.sequence))
    request.inputs.add(name=ACTIVATION, datatype="FP16", shape=[1, *shape])
    request.raw_input_contents.append(raw)
    return request


def detections(response: kserve.ModelInferResponse) -> tail_pb2.Detections:
    """The ensemble's ``boxes`` (1, K, 5) and ``box_count`` (1, 1) as our `Detections` (model-input pixels),
    raw or typed (KServe v2 allows either). Anything else is an UplinkError naming what is wrong, never a guess:
    a count past the rows, or negative, would drop boxes silently."""
    try:
        sequence = int(response.id)
    except ValueError:
        raise _malformed(f"its id {response.id[:40]!r} is not a frame's sequence") from None
    count_values = _output(response, BOX_COUNT, "INT32")
    rows = _output(response, BOXES, "FP32")
    if count_values.size != 1:
        raise _malformed(f"{BOX_COUNT} has {count_values.size} values, not 1")
    if rows.size % 5:
        raise _malformed(f"{BOXES} has {rows.size} values, not rows of 5")
    rows = rows.reshape(-1, 5)
    count = int(count_values[0])
    if not 0 <= count <= len(rows):
        raise _malformed(f"{BOX_COUNT} is {count} with {len(rows)} rows of {BOXES}")
    boxes = [tail_pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2, score=score) for x1, y1, x2, y2, score in rows[:count].tolist()]
    return tail_pb2.Detections(sequence=sequence, boxes=boxes)  # no timings: Triton sends none


_NUMPY = {"INT32": "<i4", "FP32": "<f4"}


def _output(response: kserve.ModelInferResponse, name: str, datatype: str) -> np.ndarray:
    """One output's values, from raw_output_contents (what Triton sends) or from its typed contents."""
    index = next((i for i, output in enumerate(response.outputs) if output.name == name), None)
    if index is None:
        raise _malformed(f"it has no {name!r} output (outputs: {', '.join(o.name for o in response.outputs)[:200]})")
    output = response.outputs[index]
    if output.datatype != datatype:
        raise _malformed(f"{name} is {output.datatype[:20]!r}, not {datatype}")
    if response.raw_output_contents:
        if len(response.raw_output_contents) != len(response.outputs):
            raise _malformed(f"{len(response.raw_output_contents)} raw contents for {len(response.outputs)} outputs")
        raw = response.raw_output_contents[index]
        if len(raw) % 4:
            raise _malformed(f"{name} is {len(raw)} bytes, not whole {datatype} values")
        return np.frombuffer(raw, dtype=_NUMPY[datatype])
    typed = output.contents.int_contents if datatype == "INT32" else output.contents.fp32_contents
    return np.asarray(typed, dtype=_NUMPY[datatype])


def _malformed(what: str) -> UplinkError:
    return UplinkError(grpc.StatusCode.DATA_LOSS, f"Triton: an answer not in the ensemble's form: {what}")
