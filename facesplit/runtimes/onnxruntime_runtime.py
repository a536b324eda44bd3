"""The ONNX Runtime runtime: an exported graph in one inference session, on the CPU execution provider, or with
``--device cuda`` on TensorRT's and CUDA's where this onnxruntime has them (the GPU build, onnxruntime-gpu)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facesplit.runtimes import DEFAULT_DEVICE, GraphHead, GraphTail, RuntimeUnavailableError, require_for_runtime
from facesplit.runtimes.graphs import MAX_BATCH, GraphSpec

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # best first; the CPU's takes what they cannot


def gpu_providers(available: list[str]) -> list[str]:
    """The GPU execution providers among ``available``, best first; none: the one-line reason."""
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        raise RuntimeUnavailableError("--device cuda --runtime onnxruntime needs ONNX Runtime's CUDA execution "
                                      f"provider (pip install onnxruntime-gpu); this one has {', '.join(available)}")
    return gpu


def providers_for(device: str, available: list[str], cache: Path, spec: GraphSpec
                  ) -> list[str | tuple[str, dict[str, object]]]:
    """The execution providers for ``device``, best first, among ``available``. TensorRT's engines are cached
    in ``cache`` (beside the graph) so that only the first session builds them, for the graph's whole batch
    range at once (without a profile it rebuilds for each new batch size). CUDA's convolutions stay float32:
    its default TF32 would change the activations that the float32 fingerprint stands for (torch's path turns
    TF32 off too)."""
    if device != "cuda":
        return ["CPUExecutionProvider"]
    gpu = gpu_providers(available)

    def shape(batch: int) -> str:
        return f"{spec.input_name}:" + "x".join(str(d) for d in spec.input_shape(batch))

    options: dict[str, dict[str, object]] = {
        "TensorrtExecutionProvider": {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                      "trt_profile_min_shapes": shape(1), "trt_profile_opt_shapes": shape(1),
                                      "trt_profile_max_shapes": shape(MAX_BATCH)},
        "CUDAExecutionProvider": {"use_tf32": "0"},
    }
    return [(p, options[p]) if p in options else p for p in gpu] + ["CPUExecutionProvider"]


class OnnxRuntimeGraph:
    """One exported graph in an ONNX Runtime session; ``threads``: intra-op threads (None: one per core)."""

    name = "onnxruntime"

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None, device: str = DEFAULT_DEVICE) -> None:
        ort = require_for_runtime("onnxruntime", self.name, "ONNX Runtime")
        providers = providers_for(device, ort.get_available_providers(), path.parent, spec)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        # no spinning between runs: on the edge, preprocessing and the noise run between two heads, on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.spec = spec
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if device == "cuda" and not set(self.session.get_providers()) & set(GPU_PROVIDERS):
            # ONNX Runtime logs a provider it cannot start (missing CUDA or cuDNN libraries) and runs on the CPU
            raise RuntimeUnavailableError("--device cuda --runtime onnxruntime: ONNX Runtime could not start "
                                          f"{' or '.join(gpu_providers(ort.get_available_providers()))} (are "
                                          "CUDA's and cuDNN's libraries installed where it looks?) and would run "
                                          "on the CPU instead")
        self.outputs(np.zeros(spec.input_shape(1), np.float32))  # lazy set-up now, not on the first frame

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        # ONNX Runtime reads dense NCHW memory: a channels_last view (what preprocess makes) is copied here
        feed = np.ascontiguousarray(values, dtype=np.float32)
        return self.session.run(list(self.spec.output_names), {self.spec.input_name: feed})



class OnnxRuntimeHead(OnnxRuntimeGraph, GraphHead):
    pass


class OnnxRuntimeTail(OnnxRuntimeGraph, GraphTail):
    pass
