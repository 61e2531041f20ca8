import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ohmygpu.run.v1 import run_spec_pb2 as _run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2 as _runtime_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerHealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_HEALTH_STATE_UNSPECIFIED: _ClassVar[WorkerHealthState]
    WORKER_HEALTH_STATE_READY: _ClassVar[WorkerHealthState]
    WORKER_HEALTH_STATE_LOADING: _ClassVar[WorkerHealthState]
    WORKER_HEALTH_STATE_UNHEALTHY: _ClassVar[WorkerHealthState]
    WORKER_HEALTH_STATE_RESTARTING: _ClassVar[WorkerHealthState]
    WORKER_HEALTH_STATE_FAILED: _ClassVar[WorkerHealthState]
WORKER_HEALTH_STATE_UNSPECIFIED: WorkerHealthState
WORKER_HEALTH_STATE_READY: WorkerHealthState
WORKER_HEALTH_STATE_LOADING: WorkerHealthState
WORKER_HEALTH_STATE_UNHEALTHY: WorkerHealthState
WORKER_HEALTH_STATE_RESTARTING: WorkerHealthState
WORKER_HEALTH_STATE_FAILED: WorkerHealthState

class GetVersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("version", "http_addr", "grpc_addr", "home", "pid", "started_at", "loaded", "model_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    GRPC_ADDR_FIELD_NUMBER: _ClassVar[int]
    HOME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    MODEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: str
    http_addr: str
    grpc_addr: str
    home: str
    pid: int
    started_at: _timestamp_pb2.Timestamp
    loaded: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    model_count: int
    def __init__(self, version: _Optional[str] = ..., http_addr: _Optional[str] = ..., grpc_addr: _Optional[str] = ..., home: _Optional[str] = ..., pid: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loaded: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ..., model_count: _Optional[int] = ...) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("name", "runtime", "pid", "device", "memory_bytes", "vram_bytes", "state", "in_flight", "context_length", "expires_at", "size_bytes", "digest", "mode", "queued", "tokens_per_second", "node")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    VRAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    runtime: str
    pid: int
    device: str
    memory_bytes: int
    vram_bytes: int
    state: _runtime_pb2.WorkerState
    in_flight: int
    context_length: int
    expires_at: _timestamp_pb2.Timestamp
    size_bytes: int
    digest: str
    mode: _run_spec_pb2.Mode
    queued: int
    tokens_per_second: float
    node: str
    def __init__(self, name: _Optional[str] = ..., runtime: _Optional[str] = ..., pid: _Optional[int] = ..., device: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., vram_bytes: _Optional[int] = ..., state: _Optional[_Union[_runtime_pb2.WorkerState, str]] = ..., in_flight: _Optional[int] = ..., context_length: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., size_bytes: _Optional[int] = ..., digest: _Optional[str] = ..., mode: _Optional[_Union[_run_spec_pb2.Mode, str]] = ..., queued: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., node: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("index", "name", "memory_total", "memory_used", "utilization", "temperature")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_total: int
    memory_used: int
    utilization: int
    temperature: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_total: _Optional[int] = ..., memory_used: _Optional[int] = ..., utilization: _Optional[int] = ..., temperature: _Optional[int] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("cpu_count", "ram_total", "ram_available", "gpus", "cpu_percent")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    ram_total: int
    ram_available: int
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    cpu_percent: float
    def __init__(self, cpu_count: _Optional[int] = ..., ram_total: _Optional[int] = ..., ram_available: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., cpu_percent: _Optional[float] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("unloaded",)
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    unloaded: bool
    def __init__(self, unloaded: _Optional[bool] = ...) -> None: ...

class ListLoadedRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadedResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ...) -> None: ...

class ShutdownRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShutdownResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "join_address", "join_fingerprint")
    NODES_FIELD_NUMBER: _ClassVar[int]
    JOIN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOIN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    join_address: str
    join_fingerprint: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., join_address: _Optional[str] = ..., join_fingerprint: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "state", "address", "cpu_count", "ram_total", "ram_available", "ram_budget", "ram_used", "gpus", "models", "loaded", "labels", "last_heartbeat", "hub_access", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RAM_BUDGET_FIELD_NUMBER: _ClassVar[int]
    RAM_USED_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HUB_ACCESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    address: str
    cpu_count: int
    ram_total: int
    ram_available: int
    ram_budget: int
    ram_used: int
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    models: _containers.RepeatedScalarFieldContainer[str]
    loaded: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    last_heartbeat: _timestamp_pb2.Timestamp
    hub_access: bool
    version: str
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., cpu_count: _Optional[int] = ..., ram_total: _Optional[int] = ..., ram_available: _Optional[int] = ..., ram_budget: _Optional[int] = ..., ram_used: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., models: _Optional[_Iterable[str]] = ..., loaded: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., hub_access: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class GetHealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetHealthResponse(_message.Message):
    __slots__ = ("status", "version", "started_at", "uptime_seconds", "ready", "not_ready_reason", "nodes", "workers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    NOT_READY_REASON_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    status: str
    version: str
    started_at: _timestamp_pb2.Timestamp
    uptime_seconds: float
    ready: bool
    not_ready_reason: str
    nodes: _containers.RepeatedCompositeFieldContainer[NodeHealth]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerHealth]
    def __init__(self, status: _Optional[str] = ..., version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uptime_seconds: _Optional[float] = ..., ready: _Optional[bool] = ..., not_ready_reason: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[NodeHealth, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[WorkerHealth, _Mapping]]] = ...) -> None: ...

class NodeHealth(_message.Message):
    __slots__ = ("name", "state", "reason", "last_heartbeat", "workers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    reason: str
    last_heartbeat: _timestamp_pb2.Timestamp
    workers: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workers: _Optional[int] = ...) -> None: ...

class WorkerHealth(_message.Message):
    __slots__ = ("model", "mode", "node", "state", "pid", "restarts", "in_flight", "queued", "device", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    mode: _run_spec_pb2.Mode
    node: str
    state: WorkerHealthState
    pid: int
    restarts: int
    in_flight: int
    queued: int
    device: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., mode: _Optional[_Union[_run_spec_pb2.Mode, str]] = ..., node: _Optional[str] = ..., state: _Optional[_Union[WorkerHealthState, str]] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., in_flight: _Optional[int] = ..., queued: _Optional[int] = ..., device: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
