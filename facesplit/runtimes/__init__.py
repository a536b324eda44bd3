"""The seam between the model and what runs it: a head runtime and a tail runtime, arrays in, arrays out.

A **head runtime** turns a batch of model inputs, float32 (N, 3, H, W) (BGR minus the mean, see
`facesplit.preprocess`), into the head's activations, float32 (N, 128, H/32, W/32). A **tail runtime** turns
activations into the tail's raw outputs: box offsets (N, P, 4) and face probabilities (N, P). Nothing else
lives in a runtime: preprocessing, the noise profile, the wire encoding and box post-processing are composed
around it once, in `facesplit.pipeline`, whatever the runtime. So a new runtime is one small class (see
`facesplit.runtimes.factory`), and a fake one makes the edge agent's and the tail's logic unit-testable.

This module imports neither torch nor any runtime library: the CLI reads the names from here for ``--help``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from facesplit.errors import FrostedError

if TYPE_CHECKING:
    import numpy as np

RUNTIME_NAMES = ("torch", "onnxruntime", "openvino", "tensorrt")
DEFAULT_RUNTIME = "torch"
# the pip extra that installs each runtime that is not a base dependency (pyproject.toml)
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


class RuntimeUnavailableError(FrostedError):
    """A runtime whose library is not installed (or has no device to run on); the message names the extra."""


class UnknownRuntimeError(FrostedError, ValueError):
    """A runtime name that is not one of RUNTIME_NAMES (a ValueError too, so config validators report it)."""


@runtime_checkable
class HeadRuntime(Protocol):
    """Model inputs (N, 3, H, W) float32 -> activations (N, C, h, w) float32, N free, H and W the graph's."""

    name: str

    def run(self, inputs: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class TailRuntime(Protocol):
    """Activations (N, C, h, w) float32 -> (box offsets (N, P, 4), face probabilities (N, P)), float32."""

    name: str

    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class GraphHead:
    """A head runtime over one exported graph: mixed in after a graph runner that defines `outputs`."""

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, inputs: np.ndarray) -> np.ndarray:
        return self.outputs(inputs)[0]


class GraphTail:
    """A tail runtime over one exported graph (outputs: box offsets, then face probabilities)."""

    def outputs(self, values: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loc, scores = self.outputs(activations)
        return loc, scores


def check_runtime_name(name: str) -> str:
    if name not in RUNTIME_NAMES:
        raise UnknownRuntimeError(f"runtime must be one of {', '.join(RUNTIME_NAMES)}, not {name!r}")
    return name


def install_hint(extra: str) -> str:
    return f"pip install 'frosted[{extra}]'"


def require(module: str, needed_by: str, extra: str, what: str | None = None) -> ModuleType:
    """Import ``module``, or raise the one-line error that says who needs it and which extra installs it
    (``needed_by``: e.g. ``--runtime onnxruntime``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeUnavailableError(f"{needed_by} needs {what or module}, which is not installed: "
                                      f"{install_hint(extra)}") from None


def require_for_runtime(module: str, runtime: str, what: str | None = None) -> ModuleType:
    """`require` for ``--runtime RUNTIME``, naming that runtime's extra."""
    return require(module, f"--runtime {runtime}", EXTRAS.get(runtime, runtime), what)
