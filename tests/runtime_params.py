"""Runtimes as test parameters: each CPU runtime that is installed, skipped with its extra's name otherwise."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from facesplit.runtimes import EXTRAS, install_hint

CPU_RUNTIMES = ("torch", "onnxruntime", "openvino")
# what each runtime imports: the library, and the exporter that makes its graphs
NEEDS = {"onnxruntime": ("onnxruntime", "onnx", "onnxscript"), "openvino": ("openvino", "onnx", "onnxscript"),
         "tensorrt": ("tensorrt", "onnx", "onnxscript")}


def missing(runtime: str) -> list[str]:
    return [module for module in NEEDS.get(runtime, ()) if importlib.util.find_spec(module) is None]


def runtime_param(runtime: str, *, slow: bool = False) -> object:
    """``runtime`` as a pytest parameter: skipped (with the install command) when its packages are missing,
    marked slow if asked."""
    marks = [pytest.mark.slow] if slow else []
    absent = missing(runtime)
    if absent:
        marks.append(pytest.mark.skip(reason=f"{', '.join(absent)} not installed: {install_hint(EXTRAS[runtime])}"))
    return pytest.param(runtime, marks=marks, id=runtime)


def cpu_runtime_params(*, slow_except_torch: bool = False) -> list[object]:
    return [runtime_param(r, slow=slow_except_torch and r != "torch") for r in CPU_RUNTIMES]


# CUDA cases run where torch sees a GPU (bench/gpu_session.sh runs them on one); here they skip with the reason
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                             reason=f"no CUDA device (torch {torch.__version__}): run on a GPU machine, "
                                    "bench/gpu_session.sh")


def runtime_device_params(*, slow_except_torch: bool = False) -> list[object]:
    """(runtime, device) parameters: each CPU runtime on the CPU (as `cpu_runtime_params`), and torch on CUDA."""
    on_cpu = [pytest.param(p.values[0], "cpu", marks=p.marks, id=p.id)  # type: ignore[attr-defined]
              for p in cpu_runtime_params(slow_except_torch=slow_except_torch)]
    return [*on_cpu, pytest.param("torch", "cuda", marks=NO_CUDA, id="torch-cuda")]
