"""Every incoming frame is checked here before any byte of it reaches the model."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from cloud_tail.models import ServedTail
from frosted_wire.codec import WireError, decode_tensor
from frosted_wire.v1 import tail_pb2

MAX_CAMERA_ID = 128


@dataclass(frozen=True)
class FrameRejectedError(Exception):
    code: grpc.StatusCode
    message: str
    outcome: str  # the metrics label


def validate_frame(frame: tail_pb2.ActivationFrame, tails: dict[str, ServedTail]) -> tuple[ServedTail, np.ndarray]:
    """The tail that serves this frame and its activation as float32, or FrameRejectedError saying why."""
    if not frame.camera_id or len(frame.camera_id) > MAX_CAMERA_ID:
        raise FrameRejectedError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"camera_id must be 1..{MAX_CAMERA_ID} characters", "invalid")
    tail = tails.get(frame.profile_fingerprint)
    if tail is None:
        served = ", ".join(f"{t.served_as}={t.fingerprint[:12]}" for t in tails.values())
        raise FrameRejectedError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"profile fingerprint {frame.profile_fingerprint[:40]!r} is not served here "
                            f"(served: {served})", "unknown_profile")
    if not frame.HasField("activation"):
        raise FrameRejectedError(grpc.StatusCode.INVALID_ARGUMENT, "frame has no activation", "invalid")
    try:
        activation = decode_tensor(frame.activation, tail.activation_shape)
    except WireError as exc:
        raise FrameRejectedError(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid") from None
    return tail, activation


class StreamOrder:
    """What the frames of one Detect stream promise each other (proto/): one camera, increasing sequences.
    An answer names its frame by sequence, so a repeated or decreasing one would make answers ambiguous."""

    def __init__(self) -> None:
        self.camera_id: str | None = None
        self.last_sequence: int | None = None

    def follow(self, frame: tail_pb2.ActivationFrame) -> None:
        """Record ``frame`` as the stream's latest, or FrameRejectedError if it breaks the stream's order."""
        if self.camera_id is not None and frame.camera_id != self.camera_id:
            raise FrameRejectedError(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"camera_id {frame.camera_id!r} on the stream of camera {self.camera_id!r}: "
                                     "open one stream per camera", "invalid")
        if self.last_sequence is not None and frame.sequence <= self.last_sequence:
            raise FrameRejectedError(grpc.StatusCode.INVALID_ARGUMENT,
                                     f"sequence {frame.sequence} after {self.last_sequence}: the sequences of a "
                                     "stream must increase", "invalid")
        self.camera_id, self.last_sequence = frame.camera_id, frame.sequence
