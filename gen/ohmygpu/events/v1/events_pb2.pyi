import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_DOWNLOAD: _ClassVar[EventKind]
    EVENT_KIND_LOAD: _ClassVar[EventKind]
    EVENT_KIND_UNLOAD: _ClassVar[EventKind]
    EVENT_KIND_RUN: _ClassVar[EventKind]
    EVENT_KIND_LOG: _ClassVar[EventKind]
    EVENT_KIND_CRASH: _ClassVar[EventKind]
    EVENT_KIND_ERROR: _ClassVar[EventKind]
    EVENT_KIND_ALERT: _ClassVar[EventKind]
    EVENT_KIND_QUEUE: _ClassVar[EventKind]
    EVENT_KIND_GENERATION: _ClassVar[EventKind]
    EVENT_KIND_NODE: _ClassVar[EventKind]
    EVENT_KIND_TRAIN: _ClassVar[EventKind]

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[Level]
    LEVEL_DEBUG: _ClassVar[Level]
    LEVEL_INFO: _ClassVar[Level]
    LEVEL_WARNING: _ClassVar[Level]
    LEVEL_ERROR: _ClassVar[Level]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_DOWNLOAD: EventKind
EVENT_KIND_LOAD: EventKind
EVENT_KIND_UNLOAD: EventKind
EVENT_KIND_RUN: EventKind
EVENT_KIND_LOG: EventKind
EVENT_KIND_CRASH: EventKind
EVENT_KIND_ERROR: EventKind
EVENT_KIND_ALERT: EventKind
EVENT_KIND_QUEUE: EventKind
EVENT_KIND_GENERATION: EventKind
EVENT_KIND_NODE: EventKind
EVENT_KIND_TRAIN: EventKind
LEVEL_UNSPECIFIED: Level
LEVEL_DEBUG: Level
LEVEL_INFO: Level
LEVEL_WARNING: Level
LEVEL_ERROR: Level

class Progress(_message.Message):
    __slots__ = ("completed", "total", "unit")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    completed: int
    total: int
    unit: str
    def __init__(self, completed: _Optional[int] = ..., total: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("id", "time", "kind", "level", "subject", "message", "progress", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    kind: EventKind
    level: Level
    subject: str
    message: str
    progress: Progress
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[EventKind, str]] = ..., level: _Optional[_Union[Level, str]] = ..., subject: _Optional[str] = ..., message: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...
