from google.api import annotations_pb2 as _annotations_pb2
from ohmygpu.events.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamEventsRequest(_message.Message):
    __slots__ = ("after_id", "kinds")
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    after_id: int
    kinds: _containers.RepeatedScalarFieldContainer[_events_pb2.EventKind]
    def __init__(self, after_id: _Optional[int] = ..., kinds: _Optional[_Iterable[_Union[_events_pb2.EventKind, str]]] = ...) -> None: ...
