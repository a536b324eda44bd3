"""The OpenVINO runtime (CPU plugin): an exported ONNX graph, compiled once for full float32 precision.

OpenVINO's CPU plugin would otherwise pick bfloat16 on CPUs that have it (AVX-512 BF16, AMX): faster, but
activations then differ from torch's by ~3e-2, beyond what the noise profiles were fitted and checked with.

A head also takes the frame's pixels as they are (`run_pixels`: letterboxed uint8 BGR, NHWC): OpenVINO's own
preprocessing converts them, subtracts the mean and reorders to NCHW inside the compiled model, which saves
the frame's float conversion and layout copy on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facesplit.preprocess import BGR_MEAN
from facesplit.runtimes import GraphHead, GraphTail, require_for_runtime
from facesplit.runtimes.graphs import GraphSpec


class OpenVinoGraph:
    """One exported graph compiled by OpenVINO for the CPU, dense NCHW in (the tail's activations from the wire);
    ``threads``: inference threads (None: its choice)."""

    name = "openvino"
    share_inputs = False  # True: OpenVINO reads the fed array in place (it must not change during the call)

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None) -> None:
        self.spec = spec
        self.config = compile_config(threads)
        self.compiled = self._compile(path)
        self.request = self.compiled.create_infer_request()
        self.outputs(np.zeros(spec.input_shape(1), np.float32))  # lazy set-up now, not on the first frame

    def _compile(self, path: Path) -> Any:
        ov = require_for_runtime("openvino", self.name, "OpenVINO")
        core = ov.Core()
        return core.compile_model(core.read_model(str(path)), "CPU", self.config)

    def _feed(self, values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.float32)

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: self._feed(values)}, share_inputs=self.share_inputs)
        # the request's output buffers are reused by the next inference: the caller gets its own copies
        return [np.array(results[self.compiled.output(name)], copy=True) for name in self.spec.output_names]


class OpenVinoHead(OpenVinoGraph, GraphHead):
    """A head, from model inputs (`run`) or from pixels (`run_pixels`, what `facesplit.pipeline` uses). Both
    compiled models take NHWC buffers and reorder inside the graph, where the plugin fuses it into the first
    convolution: `facesplit.preprocess` makes model inputs as an NHWC buffer viewed as NCHW (torch's
    channels_last), which a dense-NCHW input would make the caller copy: for an int8 head, as long as the head."""

    share_inputs = True  # the NHWC feed is a fresh array or the caller's own, read once

    def __init__(self, path: Path, spec: GraphSpec, threads: int | None = None) -> None:
        super().__init__(path, spec, threads)
        self.pixels_compiled = _compile_nhwc(path, self.config, pixels=True)
        self.pixels_request = self.pixels_compiled.create_infer_request()
        self.run_pixels(np.zeros((1, spec.height, spec.width, 3), np.uint8))

    def _compile(self, path: Path) -> Any:
        return _compile_nhwc(path, self.config, pixels=False)

    def _feed(self, values: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 model inputs, any strides: the NHWC view is free for `facesplit.preprocess`'s."""
        return np.ascontiguousarray(np.asarray(values, dtype=np.float32).transpose(0, 2, 3, 1))

    def run_pixels(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR, letterboxed and padded with the mean (`facesplit.preprocess.letterbox_pixels`)
        -> activations (N, C, h, w) float32; the same numbers as `run` on their model inputs."""
        results = self.pixels_request.infer({0: np.ascontiguousarray(frames)}, share_inputs=True)
        return np.array(results[self.pixels_compiled.output(0)], copy=True)


def compile_config(threads: int | None) -> dict[str, str]:
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


def _compile_nhwc(path: Path, config: dict[str, str], pixels: bool) -> Any:
    """The head graph compiled to take an NHWC buffer: float32 model inputs, or with ``pixels`` uint8 BGR that
    OpenVINO's preprocessing converts and subtracts the mean from."""
    ov = require_for_runtime("openvino", "openvino", "OpenVINO")
    from openvino.preprocess import PrePostProcessor

    core = ov.Core()
    steps = PrePostProcessor(core.read_model(str(path)))
    tensor = steps.input().tensor().set_layout(ov.Layout("NHWC"))
    steps.input().model().set_layout(ov.Layout("NCHW"))
    if pixels:
        tensor.set_element_type(ov.Type.u8)
        steps.input().preprocess().convert_element_type(ov.Type.f32).mean([float(m) for m in BGR_MEAN])
    return core.compile_model(steps.build(), "CPU", config)


class OpenVinoTail(OpenVinoGraph, GraphTail):
    pass
