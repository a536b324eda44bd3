"""A fake head and tail runtime behind the seam (arrays in, arrays out): the agent's and the tail's logic without
the model. "The face" is the brightest 32x32 block of the model input; the fake tail answers with that cell's
128-px anchor, so a box comes back exactly where the test put a bright square."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from facesplit.faceboxes import ANCHORS_PER_CELL, HEAD_CHANNELS, HEAD_STRIDE
from facesplit.priors import priors_for

FACE_SCORE = 0.9
BIG_ANCHOR = ANCHORS_PER_CELL[0] - 1  # a stride-32 cell's anchors end with its one 128-px anchor


class FakeHead:
    """Each activation cell: the mean of its 32x32 block of the model input, in every channel."""

    name = "fake"

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def run(self, inputs: np.ndarray) -> np.ndarray:
        self.inputs.append(inputs.copy())
        n, _, h, w = inputs.shape
        s = HEAD_STRIDE
        cells = inputs.mean(axis=1).reshape(n, h // s, s, w // s, s).mean(axis=(2, 4))
        return np.repeat(cells[:, None], HEAD_CHANNELS, axis=1).astype(np.float32)


class FakeTail:
    """One face per item: the brightest cell's 128-px anchor, box offsets zero (the box is the anchor)."""

    name = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.batches.append(activations.shape[0])
        n, _, h, w = activations.shape
        priors = len(priors_for(h * HEAD_STRIDE, w * HEAD_STRIDE))
        loc = np.zeros((n, priors, 4), np.float32)
        scores = np.zeros((n, priors), np.float32)
        for i in range(n):
            cell = int(np.argmax(activations[i].mean(axis=0)))
            scores[i, cell * ANCHORS_PER_CELL[0] + BIG_ANCHOR] = FACE_SCORE
        return loc, scores


def square_frame(width: int, height: int, centre: tuple[int, int], side: int = 32) -> np.ndarray:
    """A black BGR frame with a white ``side``-px square centred at ``centre`` (x, y)."""
    frame = np.zeros((height, width, 3), np.uint8)
    x, y = centre
    frame[y - side // 2:y + side // 2, x - side // 2:x + side // 2] = 255
    return frame


def square_clip(path: Path, centres: list[tuple[int, int]], size: tuple[int, int] = (320, 180), fps: int = 10) -> Path:
    """An H.264 clip, one frame per centre, of a white square on black."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        stream.time_base = Fraction(1, fps)
        for i, centre in enumerate(centres):
            frame = av.VideoFrame.from_ndarray(square_frame(width, height, centre), format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
