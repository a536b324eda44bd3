"""A runtime by name, for a detector's head or tail: the one place that knows every runtime.

Choosing a runtime other than torch is a process-level choice: torch is left one thread
(`facesplit.runtime.leave_cores_to_runtime`), as it then only adds the noise.

A new runtime is a class with ``name`` and ``run`` (see `facesplit.runtimes`) and one entry in `_GRAPH_RUNTIMES`
(if it runs exported ONNX graphs) here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facesplit.detector import SplitDetector
from facesplit.pipeline import RuntimeDetector
from facesplit.runtime import leave_cores_to_runtime
from facesplit.runtimes import HeadRuntime, TailRuntime, check_runtime_name, require_for_runtime
from facesplit.runtimes.graphs import Part, cached_graph


def _onnxruntime(part: Part) -> type:
    from facesplit.runtimes.onnxruntime_runtime import OnnxRuntimeHead, OnnxRuntimeTail

    return OnnxRuntimeHead if part == "head" else OnnxRuntimeTail


def _openvino(part: Part) -> type:
    from facesplit.runtimes.openvino_runtime import OpenVinoHead, OpenVinoTail

    return OpenVinoHead if part == "head" else OpenVinoTail


def _tensorrt(part: Part) -> type:
    from facesplit.runtimes.tensorrt_runtime import TensorRtHead, TensorRtTail, cuda_torch

    cuda_torch()  # no GPU: say so before exporting anything
    return TensorRtHead if part == "head" else TensorRtTail


# runtime -> (its library, as imported; what to call it in an error; the head or tail class for a part)
_GRAPH_RUNTIMES: dict[str, tuple[str, str, Callable[[Part], type]]] = {
    "onnxruntime": ("onnxruntime", "ONNX Runtime", _onnxruntime),
    "openvino": ("openvino", "OpenVINO", _openvino),
    "tensorrt": ("tensorrt", "TensorRT", _tensorrt),
}


def head_runtime(name: str, detector: SplitDetector, threads: int | None = None,
                 graphs: Path | None = None) -> HeadRuntime:
    """``detector``'s head (its split and input size) on runtime ``name``; ``graphs``: the folder graphs
    are exported to and found in (default: the cache)."""
    return _runtime(name, detector, "head", threads, graphs)


def tail_runtime(name: str, detector: SplitDetector, threads: int | None = None,
                 graphs: Path | None = None) -> TailRuntime:
    """``detector``'s tail (its split, input size and tail weights) on runtime ``name``."""
    return _runtime(name, detector, "tail", threads, graphs)


def _runtime(name: str, detector: SplitDetector, part: Part, threads: int | None, graphs: Path | None) -> Any:
    name = check_runtime_name(name)
    if name == "torch":
        from facesplit.runtimes.torch_runtime import TorchHead, TorchTail

        return TorchHead(detector) if part == "head" else TorchTail(detector)
    module, what, classes = _GRAPH_RUNTIMES[name]
    require_for_runtime(module, name, what)  # before any export: a missing extra is one line, at once
    runtime_class = classes(part)
    path, spec = cached_graph(detector, part, name, graphs)
    leave_cores_to_runtime()
    return runtime_class(path, spec, threads)


def detector_on(name: str, detector: SplitDetector, threads: int | None = None,
                graphs: Path | None = None) -> RuntimeDetector:
    """``detector`` (its split, input size, tail weights and post-processing) with head and tail on ``name``."""
    return RuntimeDetector(head_runtime(name, detector, threads, graphs), tail_runtime(name, detector, threads, graphs),
                           detector.input_size, detector.postprocess)
