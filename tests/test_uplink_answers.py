"""What a tail (ours or Triton) answers is checked before a box is written: a malformed Triton answer, a box that
is not finite or a score outside [0, 1] ends the stream with one line, instead of a traceback that killed the
agent, a count that dropped boxes silently, or a JSON line with NaN in it that no parser takes. A peer's error
text is cut short, and a stream that keeps ending is logged once, then every 20th time."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
import pytest

from edge_agent.sources import Backoff
from edge_agent.sources.backoff import LOG_EVERY_NTH_FAILURE
from edge_agent.triton_uplink import detections
from edge_agent.uplink import CameraStream, UplinkError, check_answer
from frosted_wire.v1 import tail_pb2
from tests.waiting import wait_until
from triton_wire import grpc_service_pb2 as kserve

BOX = [10.0, 20.0, 110.0, 140.0, 0.9]


def response(boxes: list[list[float]], count: int | None = None, *, typed: bool = False, rid: str = "7",
             box_dtype: str = "FP32", names: tuple[str, str] = ("boxes", "box_count")) -> kserve.ModelInferResponse:
    answer = kserve.ModelInferResponse(model_name="m", id=rid)
    rows = np.array(boxes, np.float32).reshape(1, -1, 5)
    counted = np.array([[len(boxes) if count is None else count]], np.int32)
    boxes_out = answer.outputs.add(name=names[0], datatype=box_dtype, shape=list(rows.shape))
    count_out = answer.outputs.add(name=names[1], datatype="INT32", shape=[1, 1])
    if typed:
        boxes_out.contents.fp32_contents.extend(rows.ravel().tolist())
        count_out.contents.int_contents.extend(counted.ravel().tolist())
    else:
        answer.raw_output_contents.extend([rows.tobytes(), counted.tobytes()])
    return answer


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
def test_a_triton_answer_raw_or_typed_is_its_boxes(typed):
    answer = detections(response([BOX, [0, 0, 5, 5, 0.1]], count=1, typed=typed))
    assert answer.sequence == 7 and len(answer.boxes) == 1
    assert [answer.boxes[0].x1, answer.boxes[0].score] == pytest.approx([10.0, 0.9])


@pytest.mark.parametrize(("malformed", "named"), [
    (response([BOX], count=-1), "box_count is -1 with 1 rows"),
    (response([BOX], count=2), "box_count is 2 with 1 rows"),
    (response([BOX], rid="frame-0"), "its id 'frame-0' is not a frame's sequence"),
    (response([BOX], names=("boxes", "count")), "it has no 'box_count' output"),
    (response([BOX], box_dtype="FP16"), "boxes is 'FP16', not FP32"),
])
def test_a_malformed_triton_answer_is_an_uplink_error_naming_what_is_wrong(malformed, named):
    with pytest.raises(UplinkError) as error:
        detections(malformed)
    assert error.value.code == grpc.StatusCode.DATA_LOSS and named in error.value.details


def test_raw_contents_of_the_wrong_size_are_refused():
    answer = response([BOX])
    answer.raw_output_contents[0] = answer.raw_output_contents[0][:-2]
    with pytest.raises(UplinkError, match="not whole FP32 values"):
        detections(answer)
    answer.raw_output_contents[0] = answer.raw_output_contents[0][:-2]
    with pytest.raises(UplinkError, match="not rows of 5"):
        detections(answer)


@pytest.mark.parametrize("bad", [[float("nan"), 0, 1, 1, 0.5], [0, 0, float("inf"), 1, 0.5], [0, 0, 1, 1, 5.0],
                                 [0, 0, 1, 1, -0.1]])
def test_an_answer_with_a_box_no_tail_gives_is_refused(bad):
    answer = tail_pb2.Detections(sequence=3, boxes=[tail_pb2.Box(x1=1, y1=2, x2=3, y2=4, score=0.5),
                                                    tail_pb2.Box(x1=bad[0], y1=bad[1], x2=bad[2], y2=bad[3],
                                                                 score=bad[4])])
    with pytest.raises(UplinkError, match="the answer to frame 3 has a"):
        check_answer(answer)
    check_answer(tail_pb2.Detections(sequence=4, boxes=[tail_pb2.Box(x1=1, y1=2, x2=3, y2=4, score=1.0)]))


class BrokenTail:
    """A transport whose every stream ends at once with a huge error text."""

    address = "tail.example:50051"

    def __init__(self) -> None:
        self.opened = 0

    async def wait_ready(self) -> None:
        return None

    def open(self, camera_id: str) -> BrokenTail:
        self.opened += 1
        return self

    async def write(self, frame: object) -> None:
        return None

    async def read(self) -> None:
        raise UplinkError(grpc.StatusCode.INTERNAL, "Triton: " + "x" * 900_000)

    def cancel(self) -> None:
        return None


async def test_a_stream_that_keeps_ending_is_logged_once_then_every_20th_time_in_short(caplog):
    tail = BrokenTail()
    stream = CameraStream(tail, "door", backoff=Backoff(0.0001, 0.0001))  # type: ignore[arg-type]

    def ended() -> list[str]:
        return [r.getMessage() for r in caplog.records if "uplink stream ended" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="edge_agent.uplink"):
        running = asyncio.create_task(stream.run())
        await wait_until(lambda: tail.opened > 2 * LOG_EVERY_NTH_FAILURE + 5, "45 streams opened")
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    lines = ended()
    assert [line.rsplit(" (", 1)[1] for line in lines] == ["1 in a row)", "20 in a row)", "40 in a row)"]
    assert all(len(line) < 500 and "(900008 characters)" in line for line in lines)
