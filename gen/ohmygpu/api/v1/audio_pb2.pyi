from google.api import annotations_pb2 as _annotations_pb2
from ohmygpu.runtime.v1 import runtime_pb2 as _runtime_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TranscribeRequest(_message.Message):
    __slots__ = ("model", "audio", "language", "initial_prompt", "temperature", "translate", "word_timestamps", "beam_size", "vad_filter", "keep_alive")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TRANSLATE_FIELD_NUMBER: _ClassVar[int]
    WORD_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    VAD_FILTER_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    model: str
    audio: bytes
    language: str
    initial_prompt: str
    temperature: float
    translate: bool
    word_timestamps: bool
    beam_size: int
    vad_filter: bool
    keep_alive: str
    def __init__(self, model: _Optional[str] = ..., audio: _Optional[bytes] = ..., language: _Optional[str] = ..., initial_prompt: _Optional[str] = ..., temperature: _Optional[float] = ..., translate: _Optional[bool] = ..., word_timestamps: _Optional[bool] = ..., beam_size: _Optional[int] = ..., vad_filter: _Optional[bool] = ..., keep_alive: _Optional[str] = ...) -> None: ...
