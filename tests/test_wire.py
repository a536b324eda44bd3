"""The wire contract: stubs regenerate byte for byte from proto/, the codec round-trips, no pixel fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor

from frosted_wire.codec import WireError, decode_tensor, encode_tensor
from frosted_wire.v1 import tail_pb2

REPO = Path(__file__).resolve().parents[1]
GENERATED = ("tail_pb2.py", "tail_pb2.pyi", "tail_pb2_grpc.py")


# (package folder, its .proto files, the stubs they generate); Triton's KServe v2 files sit beside ours
STUBS = [
    ("frosted_wire/v1", ["tail.proto"], GENERATED),
    ("triton_wire", ["grpc_service.proto", "model_config.proto"],
     tuple(f"{stem}{suffix}" for stem in ("grpc_service", "model_config")
           for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))),
]


@pytest.mark.parametrize("package, protos, generated", STUBS, ids=[package for package, _, _ in STUBS])
def test_checked_in_stubs_match_the_proto(tmp_path, package, protos, generated):
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO / "proto"), f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                    *(str(REPO / "proto" / package / proto) for proto in protos)], check=True, cwd=REPO)
    for name in generated:
        fresh = (tmp_path / package / name).read_text()
        assert fresh == (REPO / package / name).read_text(), f"{package}/{name} is stale: run `make proto`"


def test_no_message_can_carry_pixels():
    """The only bytes field on the wire is an activation tensor's data; the tail checks its shape."""
    byte_fields = [f"{message.name}.{field.name}" for message in tail_pb2.DESCRIPTOR.message_types_by_name.values()
                   for field in message.fields if field.type == FieldDescriptor.TYPE_BYTES]
    assert byte_fields == ["Tensor.data"]


@pytest.mark.parametrize("dtype, tolerance", [("float32", 0.0), ("float16", 2e-3), ("int8", 0.02)])
def test_codec_round_trip(dtype, tolerance):
    activation = np.random.default_rng(0).normal(0, 1, (128, 32, 32)).astype(np.float32)
    message = encode_tensor(activation, dtype)
    decoded = decode_tensor(tail_pb2.Tensor.FromString(message.SerializeToString()), (128, 32, 32))
    assert decoded.dtype == np.float32
    peak = np.abs(activation).max()
    assert np.abs(decoded - activation).max() <= tolerance * max(1.0, peak)


def test_int8_is_a_quarter_of_float32_and_half_of_float16():
    activation = np.ones((128, 32, 32), np.float32)
    sizes = {d: len(encode_tensor(activation, d).data) for d in ("float32", "float16", "int8")}
    assert sizes == {"float32": 524288, "float16": 262144, "int8": 131072}


def test_decode_refuses_what_it_does_not_expect():
    activation = np.zeros((128, 32, 32), np.float32)
    with pytest.raises(WireError, match="shape"):
        decode_tensor(encode_tensor(activation), (64, 32, 32))
    broken = encode_tensor(activation)
    broken.data = broken.data[:-1]
    with pytest.raises(WireError, match="bytes"):
        decode_tensor(broken, (128, 32, 32))
    with pytest.raises(WireError, match="unknown wire dtype"):
        encode_tensor(activation, "bfloat16")
    scaled = encode_tensor(activation)  # float16: a scale would be ignored, so it is refused
    scaled.scale = 1000.0
    with pytest.raises(WireError, match="takes no scale"):
        decode_tensor(scaled, (128, 32, 32))


def test_decode_refuses_values_a_float16_wire_could_not_carry():
    """int8 is scale x data: a huge scale decodes to inf (or to finite values no head produces) unless checked."""
    overflow = tail_pb2.Tensor(dtype=tail_pb2.INT8, shape=[128, 32, 32], data=bytes([127]) * (128 * 32 * 32),
                               scale=1e38)
    with pytest.raises(WireError, match=r"finite and within ±65504.*int8 scale 1e\+38 x data gives inf"):
        decode_tensor(overflow, (128, 32, 32))
    huge = np.zeros((128, 32, 32), np.float32)
    huge[0, 0, 0] = -1e30
    with pytest.raises(WireError, match="finite and within ±65504"):
        decode_tensor(encode_tensor(huge, "float32"), (128, 32, 32))
    edge = np.full((128, 32, 32), 65504.0, np.float32)  # float16's largest value is still an activation
    assert decode_tensor(encode_tensor(edge, "int8"), (128, 32, 32)).max() == pytest.approx(65504, rel=1e-6)
