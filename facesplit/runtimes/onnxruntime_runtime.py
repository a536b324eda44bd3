"""The ONNX Runtime runtime (CPU execution provider): an exported graph in one inference session."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesplit.runtimes import GraphHead, GraphTail, require_for_runtime
from facesplit.runtimes.graphs import GraphSpec


class OnnxRuntimeGraph:
    """One exported graph in an ONNX Runtime session; ``threads``: intra-op threads (None: one per core)."""

    name = "onnxruntime"

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None) -> None:
        ort = require_for_runtime("onnxruntime", self.name, "ONNX Runtime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # no spinning between runs: on the edge, preprocessing and the noise run between two heads, on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.spec = spec
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs(np.zeros(spec.input_shape(1), np.float32))  # lazy set-up now, not on the first frame

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        # ONNX Runtime reads dense NCHW memory: a channels_last view (what preprocess makes) is copied here
        feed = np.ascontiguousarray(values, dtype=np.float32)
        return self.session.run(list(self.spec.output_names), {self.spec.input_name: feed})



class OnnxRuntimeHead(OnnxRuntimeGraph, GraphHead):
    pass


class OnnxRuntimeTail(OnnxRuntimeGraph, GraphTail):
    pass
