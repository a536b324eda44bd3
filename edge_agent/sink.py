"""Where boxes go: JSON lines, one per answered frame, in the frame's own pixel coordinates."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from facesplit.errors import FrostedError
from facesplit.outputs import silence_stdout


class SinkError(FrostedError):
    """The boxes cannot be written where the config says."""


@dataclass(frozen=True)
class FrameResult:
    camera: str
    sequence: int
    frame_index: int
    capture_time: float  # unix seconds
    width: int
    height: int
    boxes: np.ndarray  # (N, 5) [x1, y1, x2, y2, score] in frame pixels
    latency_ms: dict[str, float]

    def record(self) -> dict:
        return {"camera": self.camera, "sequence": self.sequence, "frame_index": self.frame_index,
                "capture_time": round(self.capture_time, 6), "width": self.width, "height": self.height,
                "boxes": [[round(float(v), 2) for v in box[:4]] + [round(float(box[4]), 4)] for box in self.boxes],
                "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()}}


def _open_for_append(path: Path) -> TextIO:
    """The file, made if missing. A FIFO is opened without waiting for a reader (a plain open would hang the
    agent, silent, before it starts): ENXIO when none is there; once open, writes block as on any pipe."""
    try:
        is_fifo = stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        is_fifo = False
    if not is_fifo:
        return open(path, "a", encoding="utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a", encoding="utf-8")


class JsonLinesSink:
    """Writes each result as one line and flushes, so a pipe sees frames as they are answered."""

    def __init__(self, target: str = "-") -> None:
        self._owned = target != "-"
        # made here: removed again if the run wrote nothing to it (it failed to start, or nothing was answered)
        self._made = self._owned and not os.path.lexists(target)
        self._lines = 0
        if self._owned and Path(target).is_dir():
            raise SinkError(f"output {target}: is a folder, not a file")
        try:
            self._out: TextIO = _open_for_append(Path(target)) if self._owned else sys.stdout
        except OSError as exc:  # a folder, a missing parent, no permission
            if exc.errno == errno.ENXIO:
                raise SinkError(f"output {target}: a FIFO that no process is reading; start its reader first"
                                ) from None
            raise SinkError(f"output {target}: cannot open for writing ({exc.strerror or exc})") from None
        self._target = target
        self.failed = False

    def write(self, result: FrameResult) -> None:
        """One line; SinkError when it cannot be written (a full disk, a closed pipe): the boxes would be lost."""
        try:
            self._out.write(json.dumps(result.record()) + "\n")
            self._out.flush()
            self._lines += 1
        except OSError as exc:
            self.failed = True
            if not self._owned:
                silence_stdout()
            raise SinkError(f"output {self._target}: cannot write ({exc.strerror or exc})") from None

    def close(self) -> None:
        """Close the file; one this sink made and never wrote to is removed, so a run that failed leaves no
        empty output behind to be taken for a run that saw no faces."""
        if self._owned:
            try:
                self._out.close()
            except OSError as exc:  # the last flush; after a failed write the error was already said
                if not self.failed:
                    raise SinkError(f"output {self._target}: cannot write ({exc.strerror or exc})") from None
            if self._made and not self._lines:
                with contextlib.suppress(OSError):
                    if os.stat(self._target).st_size == 0:  # nothing else wrote to it meanwhile
                        os.unlink(self._target)
