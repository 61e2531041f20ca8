from google.protobuf import struct_pb2 as _struct_pb2
from ohmygpu.assets.v1 import assets_pb2 as _assets_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_CHAT: _ClassVar[Mode]
    MODE_COMPLETION: _ClassVar[Mode]
    MODE_EMBEDDINGS: _ClassVar[Mode]
    MODE_TRANSCRIPTION: _ClassVar[Mode]
    MODE_IMAGE: _ClassVar[Mode]
    MODE_SPEECH: _ClassVar[Mode]
    MODE_RERANK: _ClassVar[Mode]
    MODE_TRAINING: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_CHAT: Mode
MODE_COMPLETION: Mode
MODE_EMBEDDINGS: Mode
MODE_TRANSCRIPTION: Mode
MODE_IMAGE: Mode
MODE_SPEECH: Mode
MODE_RERANK: Mode
MODE_TRAINING: Mode

class Resources(_message.Message):
    __slots__ = ("device", "vram_budget_mb", "max_concurrency", "cpu_threads", "gpu_layers", "context_length", "node", "node_labels")
    class NodeLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VRAM_BUDGET_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CPU_THREADS_FIELD_NUMBER: _ClassVar[int]
    GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NODE_LABELS_FIELD_NUMBER: _ClassVar[int]
    device: str
    vram_budget_mb: int
    max_concurrency: int
    cpu_threads: int
    gpu_layers: int
    context_length: int
    node: str
    node_labels: _containers.ScalarMap[str, str]
    def __init__(self, device: _Optional[str] = ..., vram_budget_mb: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., cpu_threads: _Optional[int] = ..., gpu_layers: _Optional[int] = ..., context_length: _Optional[int] = ..., node: _Optional[str] = ..., node_labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Network(_message.Message):
    __slots__ = ("bind", "port", "auth_token", "cors_origins")
    BIND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CORS_ORIGINS_FIELD_NUMBER: _ClassVar[int]
    bind: str
    port: int
    auth_token: str
    cors_origins: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bind: _Optional[str] = ..., port: _Optional[int] = ..., auth_token: _Optional[str] = ..., cors_origins: _Optional[_Iterable[str]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "max_tokens", "repeat_penalty", "presence_penalty", "frequency_penalty")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REPEAT_PENALTY_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_PENALTY_FIELD_NUMBER: _ClassVar[int]
    FREQUENCY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., min_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., repeat_penalty: _Optional[float] = ..., presence_penalty: _Optional[float] = ..., frequency_penalty: _Optional[float] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("run_id", "model", "revision", "runtime", "mode", "resources", "network", "params", "extensions")
    class ExtensionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model: _assets_pb2.ModelRef
    revision: _assets_pb2.Revision
    runtime: str
    mode: Mode
    resources: Resources
    network: Network
    params: SamplingParams
    extensions: _containers.MessageMap[str, _struct_pb2.Value]
    def __init__(self, run_id: _Optional[str] = ..., model: _Optional[_Union[_assets_pb2.ModelRef, _Mapping]] = ..., revision: _Optional[_Union[_assets_pb2.Revision, _Mapping]] = ..., runtime: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., network: _Optional[_Union[Network, _Mapping]] = ..., params: _Optional[_Union[SamplingParams, _Mapping]] = ..., extensions: _Optional[_Mapping[str, _struct_pb2.Value]] = ...) -> None: ...
