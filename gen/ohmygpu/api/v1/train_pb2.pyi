from google.api import annotations_pb2 as _annotations_pb2
from ohmygpu.api.v1 import jobs_pb2 as _jobs_pb2
from ohmygpu.runtime.v1 import runtime_pb2 as _runtime_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTrainJobRequest(_message.Message):
    __slots__ = ("model", "data", "output", "options", "replace", "gguf_base")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    GGUF_BASE_FIELD_NUMBER: _ClassVar[int]
    model: str
    data: str
    output: str
    options: _runtime_pb2.TrainOptions
    replace: bool
    gguf_base: str
    def __init__(self, model: _Optional[str] = ..., data: _Optional[str] = ..., output: _Optional[str] = ..., options: _Optional[_Union[_runtime_pb2.TrainOptions, _Mapping]] = ..., replace: _Optional[bool] = ..., gguf_base: _Optional[str] = ...) -> None: ...
