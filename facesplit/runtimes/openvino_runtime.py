"""The OpenVINO runtime (CPU plugin): an exported ONNX graph, compiled once for full float32 precision.

OpenVINO's CPU plugin would otherwise pick bfloat16 on CPUs that have it (AVX-512 BF16, AMX): faster, but
activations then differ from torch's by ~3e-2, beyond what the noise profiles were fitted and checked with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesplit.runtimes import GraphHead, GraphTail, require_for_runtime
from facesplit.runtimes.graphs import GraphSpec


class OpenVinoGraph:
    """One exported graph compiled by OpenVINO for the CPU; ``threads``: inference threads (None: its choice)."""

    name = "openvino"

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None) -> None:
        ov = require_for_runtime("openvino", self.name, "OpenVINO")
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        self.spec = spec
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs(np.zeros(spec.input_shape(1), np.float32))  # lazy set-up now, not on the first frame

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        feed = np.ascontiguousarray(values, dtype=np.float32)
        results = self.request.infer({self.spec.input_name: feed})
        # the request's output buffers are reused by the next inference: the caller gets its own copies
        return [np.array(results[self.compiled.output(name)], copy=True) for name in self.spec.output_names]



class OpenVinoHead(OpenVinoGraph, GraphHead):
    pass


class OpenVinoTail(OpenVinoGraph, GraphTail):
    pass
