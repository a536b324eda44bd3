from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    FLOAT16: _ClassVar[DType]
    INT8: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]
DTYPE_UNSPECIFIED: DType
FLOAT16: DType
INT8: DType
FLOAT32: DType

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "scale")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scale: float
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scale: _Optional[float] = ...) -> None: ...

class ActivationFrame(_message.Message):
    __slots__ = ("camera_id", "sequence", "capture_time_unix_ns", "profile_fingerprint", "activation")
    CAMERA_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_TIME_UNIX_NS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    camera_id: str
    sequence: int
    capture_time_unix_ns: int
    profile_fingerprint: str
    activation: Tensor
    def __init__(self, camera_id: _Optional[str] = ..., sequence: _Optional[int] = ..., capture_time_unix_ns: _Optional[int] = ..., profile_fingerprint: _Optional[str] = ..., activation: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2", "score")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class TailTimings(_message.Message):
    __slots__ = ("queue_seconds", "compute_seconds", "batch_size")
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    def __init__(self, queue_seconds: _Optional[float] = ..., compute_seconds: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class Detections(_message.Message):
    __slots__ = ("sequence", "boxes", "timings")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    timings: TailTimings
    def __init__(self, sequence: _Optional[int] = ..., boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., timings: _Optional[_Union[TailTimings, _Mapping]] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServedProfile(_message.Message):
    __slots__ = ("fingerprint", "name", "alpha", "noisy", "input_width", "input_height", "activation_shape")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    NOISY_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_SHAPE_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    name: str
    alpha: float
    noisy: bool
    input_width: int
    input_height: int
    activation_shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, fingerprint: _Optional[str] = ..., name: _Optional[str] = ..., alpha: _Optional[float] = ..., noisy: _Optional[bool] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., activation_shape: _Optional[_Iterable[int]] = ...) -> None: ...

class TailInfo(_message.Message):
    __slots__ = ("profiles", "accepted_dtypes", "max_message_bytes", "max_batch_size", "max_in_flight_per_stream", "max_streams_per_connection", "max_streams_per_client")
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_DTYPES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_PER_STREAM_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CLIENT_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[ServedProfile]
    accepted_dtypes: _containers.RepeatedScalarFieldContainer[DType]
    max_message_bytes: int
    max_batch_size: int
    max_in_flight_per_stream: int
    max_streams_per_connection: int
    max_streams_per_client: int
    def __init__(self, profiles: _Optional[_Iterable[_Union[ServedProfile, _Mapping]]] = ..., accepted_dtypes: _Optional[_Iterable[_Union[DType, str]]] = ..., max_message_bytes: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_in_flight_per_stream: _Optional[int] = ..., max_streams_per_connection: _Optional[int] = ..., max_streams_per_client: _Optional[int] = ...) -> None: ...
