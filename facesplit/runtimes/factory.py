"""A runtime by name, for a detector's head or tail: the one place that knows every runtime.

Choosing a runtime other than torch is a process-level choice: torch is left one thread
(`facesplit.runtime.leave_cores_to_runtime`), as it then only adds the noise.

A new runtime is a class with ``name`` and ``run`` (see `facesplit.runtimes`) and one entry in `_GRAPH_RUNTIMES`
(if it runs exported ONNX graphs) here. `check_available` is what making one checks first, and what `frosted
runtimes` asks of every runtime without making any.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from facesplit.detector import SplitDetector
from facesplit.pipeline import RuntimeDetector
from facesplit.runtime import leave_cores_to_runtime
from facesplit.runtimes import (
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    EXTRAS,
    HeadRuntime,
    TailRuntime,
    check_device,
    check_precision,
    check_runtime_name,
    cuda_torch,
    require,
    require_for_runtime,
)
from facesplit.runtimes.graphs import Part, cached_graph


def _onnxruntime(part: Part) -> type:
    from facesplit.runtimes.onnxruntime_runtime import OnnxRuntimeHead, OnnxRuntimeTail

    return OnnxRuntimeHead if part == "head" else OnnxRuntimeTail


def _openvino(part: Part) -> type:
    from facesplit.runtimes.openvino_runtime import OpenVinoHead, OpenVinoTail

    return OpenVinoHead if part == "head" else OpenVinoTail


def _tensorrt(part: Part) -> type:
    from facesplit.runtimes.tensorrt_runtime import TensorRtHead, TensorRtTail

    return TensorRtHead if part == "head" else TensorRtTail


# runtime -> (its library, as imported; what to call it in an error; the head or tail class for a part)
_GRAPH_RUNTIMES: dict[str, tuple[str, str, Callable[[Part], type]]] = {
    "onnxruntime": ("onnxruntime", "ONNX Runtime", _onnxruntime),
    "openvino": ("openvino", "OpenVINO", _openvino),
    "tensorrt": ("tensorrt", "TensorRT", _tensorrt),
}


def head_runtime(name: str, detector: SplitDetector, threads: int | None = None,
                 graphs: Path | None = None, precision: str = DEFAULT_PRECISION,
                 calibration: Path | None = None, device: str = DEFAULT_DEVICE) -> HeadRuntime:
    """``detector``'s head (its split and input size) on runtime ``name``; ``graphs``: the folder graphs
    are exported to and found in (default: the cache); ``precision`` int8: quantized, calibrated on the images
    in ``calibration`` (default: MIT+CMU folds 1-5, `facesplit.runtimes.int8`); float16: half precision
    (torch, TensorRT)."""
    check_available(name, precision, device)
    if name == "torch":
        from facesplit.runtimes.torch_runtime import CudaTorchHead, TorchHead

        return CudaTorchHead(detector, precision) if device == "cuda" else TorchHead(detector, precision)
    if precision == DEFAULT_PRECISION:
        return _runtime(name, detector, "head", threads, graphs, device)
    head_class = _GRAPH_RUNTIMES[name][2]("head")
    if precision == "int8":
        from facesplit.runtimes.int8 import int8_graph

        path, spec = int8_graph(detector, calibration, graphs, name)
    else:
        path, spec = cached_graph(detector, "head", name, graphs)
    leave_cores_to_runtime()
    if name == "tensorrt":  # it builds the engine for the precision; OpenVINO's int8 is in the graph
        return head_class(path, spec, threads, precision=precision)
    return head_class(path, spec, threads)


def tail_runtime(name: str, detector: SplitDetector, threads: int | None = None,
                 graphs: Path | None = None, device: str = DEFAULT_DEVICE) -> TailRuntime:
    """``detector``'s tail (its split, input size and tail weights) on runtime ``name``, on ``device``."""
    check_available(name, DEFAULT_PRECISION, device)
    return _runtime(name, detector, "tail", threads, graphs, device)


def _runtime(name: str, detector: SplitDetector, part: Part, threads: int | None, graphs: Path | None,
             device: str) -> Any:
    """The float32 head or tail on ``name`` and ``device``, which `check_available` has passed."""
    if name == "torch":
        from facesplit.runtimes.torch_runtime import CudaTorchHead, CudaTorchTail, TorchHead, TorchTail

        if device == "cuda":
            return CudaTorchHead(detector) if part == "head" else CudaTorchTail(detector)
        return TorchHead(detector) if part == "head" else TorchTail(detector)
    runtime_class = _GRAPH_RUNTIMES[name][2](part)
    path, spec = cached_graph(detector, part, name, graphs)
    leave_cores_to_runtime()
    if name == "onnxruntime":
        return runtime_class(path, spec, threads, device=device)
    return runtime_class(path, spec, threads)


def check_available(name: str, precision: str = DEFAULT_PRECISION, device: str = DEFAULT_DEVICE,
                    see_device: bool = True) -> None:
    """Whether a head at ``precision`` (a tail: float32) can run on runtime ``name`` and ``device`` here: its
    library and the ONNX exporter, NNCF for int8, and (``see_device``) the GPU it needs; else the one-line reason
    (an UnknownRuntimeError for a combination no machine runs, a RuntimeUnavailableError for what this one
    lacks). It exports, calibrates and builds nothing: making a runtime checks this first, before any of that.
    ``see_device`` False checks the libraries only, as an image's build must (it sees no GPU)."""
    check_device(device, check_runtime_name(name))
    check_precision(precision, name, device)
    library = None
    if name != "torch":
        module, what, _ = _GRAPH_RUNTIMES[name]
        library = require_for_runtime(module, name, what)
        require("onnxscript", f"--runtime {name}", EXTRAS[name], "the ONNX exporter (onnxscript)")
        require("onnx", f"--runtime {name}", EXTRAS[name])
    if precision == "int8":
        from facesplit.runtimes.int8 import require_quantizer

        require_quantizer(name)
    if precision == "float16" and name == "tensorrt":
        require("onnxruntime", "--precision float16 --runtime tensorrt", EXTRAS[name],
                "ONNX Runtime (its float16 converter)")
    if not see_device:
        return
    if name == "tensorrt":
        cuda_torch("--runtime tensorrt")
    elif device == "cuda" and name == "onnxruntime":
        from facesplit.runtimes.onnxruntime_runtime import gpu_providers

        gpu_providers(library.get_available_providers())
    elif device == "cuda":
        cuda_torch()


def detector_on(name: str, detector: SplitDetector, threads: int | None = None,
                graphs: Path | None = None, precision: str = DEFAULT_PRECISION,
                calibration: Path | None = None, device: str = DEFAULT_DEVICE) -> RuntimeDetector:
    """``detector`` (its split, input size, tail weights and post-processing) with head and tail on ``name``
    and ``device``; the head at ``precision`` (the tail stays float32: it runs in the cloud, on what the head
    sent)."""
    return RuntimeDetector(head_runtime(name, detector, threads, graphs, precision, calibration, device),
                           tail_runtime(name, detector, threads, graphs, device), detector.input_size,
                           detector.postprocess)
