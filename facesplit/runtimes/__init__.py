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

import hashlib
import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from facesplit.errors import FrostedError

if TYPE_CHECKING:
    import numpy as np
    import torch

RUNTIME_NAMES = ("torch", "onnxruntime", "openvino", "tensorrt")
DEFAULT_RUNTIME = "torch"
# the pip extra that installs each runtime that is not a base dependency (pyproject.toml)
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


# What the head computes in (`--precision`, `model.precision`). int8 is the float graph quantized after training
# (`facesplit.runtimes.int8`): another head, whose activations differ, so frames from it carry another fingerprint.
PRECISIONS = ("float32", "float16", "int8")
DEFAULT_PRECISION = "float32"
# where an int8 head (one QDQ graph, `facesplit.runtimes.int8`) runs: ONNX Runtime's CPU kernels ran it slower than
# its float graph, so it is not offered there (it still checks the exported graph in tests/test_int8.py)
INT8_RUNTIMES = ("openvino", "tensorrt")
# float16 halves the head's memory traffic on a GPU's tensor cores. On a CPU it is slower than float32, but computes
# as a GPU's half-precision head does (float16 values, float32 sums), so a profile can be validated for it without one
FLOAT16_RUNTIMES = ("torch", "tensorrt")
# the heads other than float32 a tail can be told to serve (`frosted tail --serve-precision`)
SERVABLE_PRECISIONS = tuple(p for p in PRECISIONS if p != DEFAULT_PRECISION)

# Where the head and tail compute (`--device`, `model.device`). cuda: torch on the GPU (the activation stays there
# and the noise is drawn there, `facesplit.noise.streams`), or ONNX Runtime's CUDA/TensorRT execution providers.
DEVICES = ("cpu", "cuda")
DEFAULT_DEVICE = "cpu"
MAX_THREADS = 1024  # far above any machine's cores: torch crashes on absurd thread counts instead of refusing them
CUDA_RUNTIMES = ("torch", "onnxruntime", "tensorrt")  # TensorRT runs on the GPU whatever --device says


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
class PixelHeadRuntime(HeadRuntime, Protocol):
    """A head runtime that also converts the frame's pixels itself: letterboxed uint8 BGR (N, H, W, 3), padded
    with the mean (`facesplit.preprocess.letterbox_pixels`) -> the activations `run` gives for their model
    inputs. `facesplit.pipeline.EdgeHead` then skips the float pass on the CPU."""

    def run_pixels(self, frames: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class DeviceHeadRuntime(HeadRuntime, Protocol):
    """A head runtime whose activations can stay on its device (a GPU): `run_on_device` gives them as a float32
    torch tensor there, so that `facesplit.pipeline` draws the noise on the device and copies only the noisy
    activation to the host, once, for the wire."""

    device: torch.device

    def run_on_device(self, inputs: np.ndarray) -> torch.Tensor: ...


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


def check_precision(precision: str, runtime: str, device: str = DEFAULT_DEVICE) -> str:
    """``precision`` if ``runtime`` can run a head at it on ``device``, else the one-line reason (an
    UnknownRuntimeError)."""
    if precision not in PRECISIONS:
        raise UnknownRuntimeError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "int8" and runtime not in INT8_RUNTIMES:
        raise UnknownRuntimeError(f"--precision int8 runs on --runtime {' or '.join(INT8_RUNTIMES)}, not {runtime}")
    if precision == "float16" and runtime not in FLOAT16_RUNTIMES:
        raise UnknownRuntimeError(f"--precision float16 runs on --runtime {' or '.join(FLOAT16_RUNTIMES)}, "
                                  f"not {runtime}")
    return precision


def check_calibration(calibration: object, precision: str) -> None:
    """Calibration frames only mean something to an int8 head: given with another precision they would be ignored
    in silence, and the user would believe the head int8 (an UnknownRuntimeError, a ValueError for validators)."""
    if calibration is not None and precision != "int8":
        raise UnknownRuntimeError(f"--calibration calibrates an int8 head, and this head is {precision}: add "
                                  "--precision int8, or leave --calibration out")


def check_device(device: str, runtime: str) -> str:
    """``device`` if ``runtime`` can run on it, else the one-line reason (an UnknownRuntimeError). Whether the
    machine has that device is `cuda_torch`'s question, asked when the runtime is made."""
    if device not in DEVICES:
        raise UnknownRuntimeError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cuda" and runtime not in CUDA_RUNTIMES:
        raise UnknownRuntimeError(f"--device cuda runs on --runtime {', '.join(CUDA_RUNTIMES)}, not {runtime}")
    return device


def runs_on(runtime: str, device: str) -> str:
    """Where ``runtime`` computes when asked for ``device``: TensorRT runs on the GPU whatever --device says."""
    return "cuda" if runtime == "tensorrt" else device


def cuda_torch(needed_by: str = "--device cuda") -> ModuleType:
    """torch, if it sees a CUDA device; else the one-line reason, naming what is missing."""
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise RuntimeUnavailableError(f"{needed_by} needs an NVIDIA GPU and a CUDA build of torch; torch "
                                      f"{torch.__version__} ({build}) sees no CUDA device")
    return torch


def fingerprint_at(fingerprint: str, precision: str) -> str:
    """What frames carry on the wire for a profile's (or clean) ``fingerprint`` when the head runs at
    ``precision``: float32 keeps it; another precision is another head (its activations differ from the ones
    the profile was fitted and validated on), so another fingerprint, which a tail serves only if told to
    (``frosted tail --serve-precision int8``): a tail validated for the float head refuses the frames."""
    if precision == DEFAULT_PRECISION:
        return fingerprint
    digest = hashlib.sha256(f"{fingerprint}|head-precision:{precision}".encode()).hexdigest()
    return f"{precision}-{digest[:27]}"


def served_name(name: str, precision: str) -> str:
    """What a tail (our `GetInfo`, a Triton model) calls ``name``'s tail served to heads at ``precision``."""
    return name if precision == DEFAULT_PRECISION else f"{name}+{precision}-head"


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
