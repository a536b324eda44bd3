"""The TensorRT runtime (NVIDIA GPUs, a Jetson): the exported ONNX graph built into an engine, once per GPU.

Buffers live on the GPU as torch CUDA tensors (a CUDA build of torch is what a Jetson or GPU host runs); the
engine is cached beside the graph, named for the TensorRT version, the GPU it was built on and the precision. The
engine has one optimisation profile covering batch 1 to `MAX_BATCH`. Every network is strongly typed: the graph's
own types decide each layer's precision, the only mode TensorRT 11 has (it removed the FP16 and INT8 builder
flags that 10.x's weakly typed networks took; 10.x takes strongly typed networks too). So a float16 head is the
float graph made half (`facesplit.runtimes.graphs.float16_graph`, inputs and outputs still float32), and an int8
head is the QDQ graph of `facesplit.runtimes.int8` (explicit quantization: the graph's scales, not TensorRT's own
calibration; what is not quantized stays float32), its unsigned quantizers made signed first
(`facesplit.runtimes.int8.signed_activations`). Untested on
the CPU-only machines this project is developed on: tests/test_runtimes.py and tests/test_int8.py skip it there
with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from facesplit.outputs import write_bytes
from facesplit.runtimes import DEFAULT_PRECISION, GraphHead, GraphTail, require_for_runtime
from facesplit.runtimes import cuda_torch as cuda_torch_for
from facesplit.runtimes.graphs import MAX_BATCH, ExportError, GraphSpec, float16_graph, in_pieces

NAME = "tensorrt"


def cuda_torch() -> Any:
    """torch, if it has a CUDA device; else the one-line reason."""
    return cuda_torch_for("--runtime tensorrt")


class TensorRtGraph:
    name = NAME

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None, typical_batch: int = 1,
                 precision: str = DEFAULT_PRECISION) -> None:
        del threads  # the GPU decides
        trt = require_for_runtime("tensorrt", NAME, "TensorRT")
        torch = cuda_torch()
        self.torch, self.spec, self.precision = torch, spec, precision
        if precision == "int8":  # TensorRT takes only signed int8 quantizers
            from facesplit.runtimes.int8 import signed_graph

            path = signed_graph(path)
        elif precision == "float16":
            path = float16_graph(path)
        logger = trt.Logger(trt.Logger.WARNING)
        device = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name())
        engine_path = path.with_name(f"{path.stem}-{precision}-trt{trt.__version__}-{device}.engine")
        if not engine_path.is_file():
            self._build(trt, logger, path, engine_path, typical_batch)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ExportError(f"{engine_path}: TensorRT could not load this engine; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def _build(self, trt: Any, logger: Any, path: Path, engine_path: Path, typical_batch: int) -> None:
        builder = trt.Builder(logger)
        # required for 10.x to honour the graph's types; accepted and implied on 11.x
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(path.read_bytes()):
            raise ExportError(f"{path}: TensorRT cannot parse the graph ({parser.get_error(0)})")
        config = builder.create_builder_config()
        if self.precision == DEFAULT_PRECISION and hasattr(trt.BuilderFlag, "TF32"):
            # TF32 is on by default: it would change the activations the float32 fingerprint stands for
            config.clear_flag(trt.BuilderFlag.TF32)
        profile = builder.create_optimization_profile()
        spec = self.spec
        profile.set_shape(spec.input_name, spec.input_shape(1), spec.input_shape(min(typical_batch, MAX_BATCH)),
                          spec.input_shape(MAX_BATCH))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"{path}: TensorRT could not build an engine from the graph")
        write_bytes(engine_path, bytes(serialized))

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        return in_pieces(self._run, values)  # the engine's profile ends at MAX_BATCH

    def _run(self, values: np.ndarray) -> list[np.ndarray]:
        torch, spec = self.torch, self.spec
        with torch.cuda.stream(self.stream):
            feed = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to("cuda", non_blocking=True)
            # a shape it refuses leaves the last one set (and outputs sized for it): not an exception of its own
            if not self.context.set_input_shape(spec.input_name, tuple(feed.shape)):
                raise ExportError(f"TensorRT refused input shape {tuple(feed.shape)} for {spec.input_name} "
                                  f"(its engine takes batches 1 to {MAX_BATCH} of {spec.input_shape(1)[1:]})")
            self.context.set_tensor_address(spec.input_name, feed.data_ptr())
            results = []
            for name in spec.output_names:
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                results.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT inference failed")
            host = [out.to("cpu", non_blocking=True) for out in results]
        self.stream.synchronize()
        return [out.numpy() for out in host]


class TensorRtHead(TensorRtGraph, GraphHead):
    pass


class TensorRtTail(TensorRtGraph, GraphTail):
    pass
