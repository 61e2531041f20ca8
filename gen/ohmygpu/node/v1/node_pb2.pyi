from ohmygpu.assets.v1 import assets_pb2 as _assets_pb2
from ohmygpu.run.v1 import run_spec_pb2 as _run_spec_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JoinRequest(_message.Message):
    __slots__ = ("hello", "heartbeat", "worker_exit")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    WORKER_EXIT_FIELD_NUMBER: _ClassVar[int]
    hello: NodeHello
    heartbeat: Heartbeat
    worker_exit: WorkerExit
    def __init__(self, hello: _Optional[_Union[NodeHello, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., worker_exit: _Optional[_Union[WorkerExit, _Mapping]] = ...) -> None: ...

class NodeHello(_message.Message):
    __slots__ = ("name", "agent_address", "agent_certificate", "labels", "inventory", "models", "hub_access", "version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    AGENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HUB_ACCESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    agent_address: str
    agent_certificate: bytes
    labels: _containers.ScalarMap[str, str]
    inventory: NodeInventory
    models: _containers.RepeatedCompositeFieldContainer[_assets_pb2.InstallRecord]
    hub_access: bool
    version: str
    def __init__(self, name: _Optional[str] = ..., agent_address: _Optional[str] = ..., agent_certificate: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., inventory: _Optional[_Union[NodeInventory, _Mapping]] = ..., models: _Optional[_Iterable[_Union[_assets_pb2.InstallRecord, _Mapping]]] = ..., hub_access: _Optional[bool] = ..., version: _Optional[str] = ...) -> None: ...

class NodeInventory(_message.Message):
    __slots__ = ("cpu_count", "ram_total", "ram_available", "ram_budget", "gpus", "gpu_runtimes")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    RAM_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RAM_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    RAM_BUDGET_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    GPU_RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    ram_total: int
    ram_available: int
    ram_budget: int
    gpus: _containers.RepeatedCompositeFieldContainer[NodeGpu]
    gpu_runtimes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cpu_count: _Optional[int] = ..., ram_total: _Optional[int] = ..., ram_available: _Optional[int] = ..., ram_budget: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[NodeGpu, _Mapping]]] = ..., gpu_runtimes: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeGpu(_message.Message):
    __slots__ = ("index", "name", "memory_total", "memory_free", "memory_used", "utilization", "temperature")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    memory_total: int
    memory_free: int
    memory_used: int
    utilization: int
    temperature: int
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., memory_total: _Optional[int] = ..., memory_free: _Optional[int] = ..., memory_used: _Optional[int] = ..., utilization: _Optional[int] = ..., temperature: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("inventory", "models", "models_changed")
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MODELS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    inventory: NodeInventory
    models: _containers.RepeatedCompositeFieldContainer[_assets_pb2.InstallRecord]
    models_changed: bool
    def __init__(self, inventory: _Optional[_Union[NodeInventory, _Mapping]] = ..., models: _Optional[_Iterable[_Union[_assets_pb2.InstallRecord, _Mapping]]] = ..., models_changed: _Optional[bool] = ...) -> None: ...

class WorkerExit(_message.Message):
    __slots__ = ("worker_id", "description", "signal", "log_tail")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    description: str
    signal: int
    log_tail: str
    def __init__(self, worker_id: _Optional[str] = ..., description: _Optional[str] = ..., signal: _Optional[int] = ..., log_tail: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("welcome", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: HeartbeatAck
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session_secret", "heartbeat_interval_ms", "down_after_ms")
    SESSION_SECRET_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    DOWN_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    session_secret: str
    heartbeat_interval_ms: int
    down_after_ms: int
    def __init__(self, session_secret: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., down_after_ms: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LaunchRequest(_message.Message):
    __slots__ = ("model", "runtime", "record", "spec")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    model: str
    runtime: str
    record: _assets_pb2.InstallRecord
    spec: _run_spec_pb2.RunSpec
    def __init__(self, model: _Optional[str] = ..., runtime: _Optional[str] = ..., record: _Optional[_Union[_assets_pb2.InstallRecord, _Mapping]] = ..., spec: _Optional[_Union[_run_spec_pb2.RunSpec, _Mapping]] = ...) -> None: ...

class LaunchResponse(_message.Message):
    __slots__ = ("worker_id", "pid", "memory_bytes", "context_length", "load_ns", "log_path")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LOAD_NS_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    pid: int
    memory_bytes: int
    context_length: int
    load_ns: int
    log_path: str
    def __init__(self, worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., context_length: _Optional[int] = ..., load_ns: _Optional[int] = ..., log_path: _Optional[str] = ...) -> None: ...

class StopWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class StopWorkerResponse(_message.Message):
    __slots__ = ("stopped",)
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    stopped: bool
    def __init__(self, stopped: _Optional[bool] = ...) -> None: ...

class FetchModelRequest(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _assets_pb2.InstallRecord
    def __init__(self, record: _Optional[_Union[_assets_pb2.InstallRecord, _Mapping]] = ...) -> None: ...

class FetchModelResponse(_message.Message):
    __slots__ = ("completed", "total", "stage")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    completed: int
    total: int
    stage: str
    def __init__(self, completed: _Optional[int] = ..., total: _Optional[int] = ..., stage: _Optional[str] = ...) -> None: ...

class ReceiveModelRequest(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ModelHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ModelHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ModelHeader(_message.Message):
    __slots__ = ("record", "sent")
    RECORD_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    record: _assets_pb2.InstallRecord
    sent: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, record: _Optional[_Union[_assets_pb2.InstallRecord, _Mapping]] = ..., sent: _Optional[_Iterable[int]] = ...) -> None: ...

class ReceiveModelResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: _assets_pb2.InstallRecord
    def __init__(self, record: _Optional[_Union[_assets_pb2.InstallRecord, _Mapping]] = ...) -> None: ...
