"""The head and the tail as ONNX graphs: exported from the torch model, at one input size, any batch.

The head graph is the head alone: (N, 3, H, W) model inputs -> (N, 128, H/32, W/32) activations. The noise is
not in it: it is drawn on the CPU from the cryptographic sampler (`facesplit.noise.sampler`) and added outside
the graph, whatever the runtime, so no runtime's random generator ever decides what an observer learns. The
tail graph is the tail with the weights it is given (a profile's noise-aware tail, or the clean one):
(N, 128, h, w) -> loc (N, P, 4), scores (N, P). Batch norm is folded into the convolutions first.

The runtimes export what they need on first use into a cache (``$FROSTED_GRAPH_CACHE``, else
``$XDG_CACHE_HOME/frosted/graphs``), named by everything the graph depends on, so a change of weights, split,
input size or exporter is a new file, never a stale one. ``frosted export onnx`` writes the same graphs where
the user asks (`facesplit.runtimes.export`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from facesplit.detector import SplitDetector
from facesplit.errors import ConflictError, FrostedError
from facesplit.outputs import replacing
from facesplit.runtimes import EXTRAS, require
from facesplit.weights import head_fingerprint

GRAPH_FORMAT = "frosted-onnx/1"  # bump when what a graph computes or is named changes
OPSET = 18
log = logging.getLogger(__name__)
MAX_BATCH = 64  # the largest batch a graph is declared for (the tail's --max-batch is at most 64 too)
HEAD_INPUT, HEAD_OUTPUT = "input", "activation"
TAIL_INPUT, TAIL_OUTPUTS = "activation", ("loc", "scores")
CACHE_ENV = "FROSTED_GRAPH_CACHE"

Part = Literal["head", "tail"]


class ExportError(FrostedError):
    """A graph that cannot be exported (no fixed input size, a folder that cannot be written)."""


class ExportConflictError(ExportError, ConflictError):
    """Export options that cannot go together (no fixed input size, a profile's size not exported)."""


@dataclass(frozen=True)
class GraphSpec:
    """What one graph computes: which part, where the model is split, for which input size and weights."""

    part: Part
    split: str
    width: int  # of the model input; the tail's activation is width/32 wide
    height: int
    weights_sha256: str  # of the part's own (unfused) weights

    @property
    def key(self) -> str:
        """Changes whenever the graph would: part, split, size, weights, exporter and torch versions."""
        text = "|".join((GRAPH_FORMAT, str(OPSET), torch.__version__, self.part, self.split,
                         f"{self.width}x{self.height}", self.weights_sha256))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def input_name(self) -> str:
        return HEAD_INPUT if self.part == "head" else TAIL_INPUT

    @property
    def output_names(self) -> tuple[str, ...]:
        return (HEAD_OUTPUT,) if self.part == "head" else TAIL_OUTPUTS

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        if self.part == "head":
            return batch, 3, self.height, self.width
        from facesplit.faceboxes import activation_shape

        return (batch, *activation_shape(self.height, self.width))

    def cache_name(self) -> str:
        return f"{self.part}-{self.split}-{self.size}-{self.key}.onnx"


def in_pieces(run: Callable[[np.ndarray], list[np.ndarray]], values: np.ndarray, most: int = MAX_BATCH
              ) -> list[np.ndarray]:
    """``run``'s outputs for the batch ``values``, run at most ``most`` rows at a time and joined: a runtime whose
    engine is built for batches up to `MAX_BATCH` (TensorRT's optimisation profile) takes a larger one in pieces."""
    if len(values) <= most:
        return run(values)
    pieces = [run(values[start:start + most]) for start in range(0, len(values), most)]
    return [np.concatenate(parts) for parts in zip(*pieces, strict=True)]


def spec_for(detector: SplitDetector, part: Part) -> GraphSpec:
    """The graph of ``detector``'s head or tail at its split and input size (which must be fixed)."""
    size = detector.input_size
    if size.native or size.width is None or size.height is None:
        raise ExportConflictError("a graph is exported for one input size: give a fixed --input-size (e.g. 1024 or "
                          "1024x576), not 'native'")
    module = detector.source.head if part == "head" else detector.source.tail
    weights = head_fingerprint(detector.source) if part == "head" else _weights_sha256(module)
    return GraphSpec(part, detector.split, size.width, size.height, weights)


def export_graph(detector: SplitDetector, part: Part, path: Path, runtime: str | None = None) -> GraphSpec:
    """Write ``detector``'s head or tail to ``path`` as an ONNX graph (dynamic batch, fixed size); atomic.
    ``runtime``: the runtime it is exported for, named if the exporter is missing (None: ``frosted export``)."""
    spec = spec_for(detector, part)
    needed_by, extra = ("frosted export onnx", "onnx") if runtime is None else (f"--runtime {runtime}",
                                                                                 EXTRAS.get(runtime, "onnx"))
    require("onnxscript", needed_by, extra, "the ONNX exporter (onnxscript)")
    onnx = require("onnx", needed_by, extra)
    module = detector.model.head if part == "head" else detector.model.tail  # batch norm fused
    example = torch.zeros(spec.input_shape(2))  # batch 2: a batch of 1 would be specialised into the graph
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with replacing(path) as partial:
        with quiet(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, verbose=False,
                                        input_names=[spec.input_name], output_names=list(spec.output_names),
                                        dynamic_shapes=({0: batch},), opset_version=OPSET, external_data=False)
            assert program is not None
            program.save(str(partial))
        onnx.checker.check_model(str(partial))
    return spec


def graph_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frosted" / "graphs"


def cached_graph(detector: SplitDetector, part: Part, runtime: str, directory: Path | None = None
                 ) -> tuple[Path, GraphSpec]:
    """The graph file of ``detector``'s head or tail for ``runtime``, exported into the cache the first time
    it is asked for."""
    spec = spec_for(detector, part)
    path = (directory or graph_cache_dir()) / spec.cache_name()
    if path.is_file() and (damage := _damage(path)) is not None:  # the cache is ours: remade, not a traceback
        log.warning("%s: a damaged graph in the cache (%s); exporting it again", path, damage)
    elif path.is_file():
        return path, spec
    export_graph(detector, part, path, runtime)
    return path, spec


def _damage(path: Path) -> str | None:
    """Why the cached graph at ``path`` cannot be read (truncated, overwritten), or None when it can."""
    try:
        import onnx
    except ImportError:  # nothing here reads graphs without it: the runtime will say what it needs
        return None
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError, onnx's own, an OSError
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"[:200]
    return None


def _weights_sha256(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def quiet(loggers: tuple[str, ...] = EXPORTER_LOGGERS) -> Iterator[None]:
    """Silence a graph tool (the exporter, NNCF): they print progress lines and log warnings about optional
    packages, and a verb's stdout may be its JSON product; none of it is the user's business."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [logger.level for logger in found]
    for logger in found:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(found, levels, strict=True):
            logger.setLevel(level)


def derived_graph(path: Path, suffix: str, derive: Callable[[Any], Any]) -> Path:
    """The graph at ``path`` transformed by ``derive`` (an ONNX model in, one out), written once beside it as
    ``STEM-SUFFIX.onnx`` (whole or not at all)."""
    import onnx

    made = path.with_name(f"{path.stem}-{suffix}.onnx")
    if not made.is_file():
        with replacing(made) as partial:
            onnx.save(derive(onnx.load(str(path))), str(partial))
    return made


def float16_graph(path: Path) -> Path:
    """The float graph at ``path`` computed in half precision, its inputs and outputs still float32, written once
    beside it as ``STEM-float16.onnx``: what TensorRT builds for ``--precision float16``. TensorRT 11 builds only
    strongly typed networks, whose precision is the graph's own (the FP16 builder flag of 10.x is gone), so the
    graph itself is made half. ONNX Runtime's converter (the tensorrt extra installs onnxruntime for NNCF)."""
    def half(model: Any) -> Any:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        with quiet(("onnxruntime",)):
            return convert_float_to_float16(model, keep_io_types=True)

    return derived_graph(path, "float16", half)
