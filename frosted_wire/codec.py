"""Activation tensors <-> wire messages, with every check the receiving side needs before trusting bytes."""

from __future__ import annotations

import math

import numpy as np

from frosted_wire.v1 import tail_pb2

WIRE_DTYPES: dict[str, int] = {"float16": tail_pb2.FLOAT16, "int8": tail_pb2.INT8, "float32": tail_pb2.FLOAT32}
_NUMPY_DTYPES = {tail_pb2.FLOAT16: np.dtype("<f2"), tail_pb2.INT8: np.dtype("i1"), tail_pb2.FLOAT32: np.dtype("<f4")}
MAX_ACTIVATION = float(np.finfo(np.float16).max)  # 65504


class WireError(ValueError):
    """A tensor message that is not what it claims to be (dtype, shape, length, values)."""


def encode_tensor(activation: np.ndarray, dtype: str = "float16") -> tail_pb2.Tensor:
    """A (C, H, W) float32 activation -> Tensor message; int8 is symmetric with one scale per tensor."""
    if dtype not in WIRE_DTYPES:
        raise WireError(f"unknown wire dtype {dtype!r}; expected one of {', '.join(WIRE_DTYPES)}")
    wire = WIRE_DTYPES[dtype]
    scale = 0.0
    if wire == tail_pb2.INT8:
        peak = float(np.abs(activation).max()) if activation.size else 0.0
        scale = peak / 127.0 if peak > 0 else 1.0
        data = np.clip(np.rint(activation / scale), -127, 127).astype(np.int8)
    else:
        data = activation.astype(_NUMPY_DTYPES[wire], copy=False)
    return tail_pb2.Tensor(dtype=wire, shape=list(activation.shape), data=data.tobytes(), scale=scale)


def decode_tensor(message: tail_pb2.Tensor, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Tensor message -> float32 array of ``expected_shape``; raises WireError on anything else."""
    numpy_dtype = _NUMPY_DTYPES.get(message.dtype)
    if numpy_dtype is None:
        raise WireError(f"unsupported dtype {message.dtype}; accepted: {', '.join(WIRE_DTYPES)}")
    shape = tuple(message.shape)
    if shape != tuple(expected_shape):
        raise WireError(f"activation shape {shape} does not match the served profile's {tuple(expected_shape)}")
    expected_bytes = math.prod(shape) * numpy_dtype.itemsize
    if len(message.data) != expected_bytes:
        raise WireError(f"activation has {len(message.data)} bytes; shape {shape} of {numpy_dtype.name} "
                        f"needs {expected_bytes}")
    values = np.frombuffer(message.data, dtype=numpy_dtype).reshape(shape)
    if message.dtype == tail_pb2.INT8:
        if not (math.isfinite(message.scale) and message.scale > 0):
            raise WireError(f"int8 activation needs a finite positive scale, got {message.scale}")
        with np.errstate(over="ignore"):  # an overflow to inf is refused just below
            decoded = values.astype(np.float32) * np.float32(message.scale)
    elif message.scale != 0:  # a scale the data would not be multiplied by: the sender meant something else
        raise WireError(f"a {numpy_dtype.name} activation takes no scale (only int8's does), got {message.scale}")
    else:
        decoded = values.astype(np.float32)
    # Checked after decoding, whatever the dtype: int8's scale x 127 overflows float32 to inf just as a float32
    # frame can carry inf. One bound for every dtype, the range of the default float16 wire: no head produces more.
    peak = float(np.abs(decoded).max()) if decoded.size else 0.0
    if not peak <= MAX_ACTIVATION:  # NaN compares false too
        source = f"int8 scale {message.scale:g} x data gives {peak:g}" if message.dtype == tail_pb2.INT8 else (
            f"largest |value| is {peak:g}")
        raise WireError(f"activation values must be finite and within ±{MAX_ACTIVATION:g} (float16's range): "
                        f"{source}")
    return decoded
