import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Provider(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_UNSPECIFIED: _ClassVar[Provider]
    PROVIDER_HF: _ClassVar[Provider]
    PROVIDER_LOCAL: _ClassVar[Provider]
    PROVIDER_URL: _ClassVar[Provider]
    PROVIDER_UPLOAD: _ClassVar[Provider]

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_LLM: _ClassVar[ModelKind]
    MODEL_KIND_EMBEDDING: _ClassVar[ModelKind]
    MODEL_KIND_WHISPER: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE: _ClassVar[ModelKind]
    MODEL_KIND_TTS: _ClassVar[ModelKind]
    MODEL_KIND_RERANKER: _ClassVar[ModelKind]
    MODEL_KIND_ADAPTER: _ClassVar[ModelKind]

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_GGUF: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_SAFETENSORS: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_CT2: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_OTHER: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_ONNX: _ClassVar[ArtifactFormat]
PROVIDER_UNSPECIFIED: Provider
PROVIDER_HF: Provider
PROVIDER_LOCAL: Provider
PROVIDER_URL: Provider
PROVIDER_UPLOAD: Provider
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_LLM: ModelKind
MODEL_KIND_EMBEDDING: ModelKind
MODEL_KIND_WHISPER: ModelKind
MODEL_KIND_IMAGE: ModelKind
MODEL_KIND_TTS: ModelKind
MODEL_KIND_RERANKER: ModelKind
MODEL_KIND_ADAPTER: ModelKind
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_GGUF: ArtifactFormat
ARTIFACT_FORMAT_SAFETENSORS: ArtifactFormat
ARTIFACT_FORMAT_CT2: ArtifactFormat
ARTIFACT_FORMAT_OTHER: ArtifactFormat
ARTIFACT_FORMAT_ONNX: ArtifactFormat

class ModelRef(_message.Message):
    __slots__ = ("provider", "repo", "kind")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REPO_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    provider: Provider
    repo: str
    kind: ModelKind
    def __init__(self, provider: _Optional[_Union[Provider, str]] = ..., repo: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ...) -> None: ...

class Revision(_message.Message):
    __slots__ = ("requested", "commit")
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    requested: str
    commit: str
    def __init__(self, requested: _Optional[str] = ..., commit: _Optional[str] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("filename", "size", "sha256", "etag", "format", "local_path", "role")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    size: int
    sha256: str
    etag: str
    format: ArtifactFormat
    local_path: str
    role: str
    def __init__(self, filename: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., etag: _Optional[str] = ..., format: _Optional[_Union[ArtifactFormat, str]] = ..., local_path: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class GgufInfo(_message.Message):
    __slots__ = ("architecture", "name", "parameter_count", "quantization", "context_length", "embedding_length", "block_count", "chat_template", "gguf_version", "head_count", "head_count_kv", "tensor_data_bytes", "vocab_size")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BLOCK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    GGUF_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEAD_COUNT_KV_FIELD_NUMBER: _ClassVar[int]
    TENSOR_DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    name: str
    parameter_count: int
    quantization: str
    context_length: int
    embedding_length: int
    block_count: int
    chat_template: str
    gguf_version: int
    head_count: int
    head_count_kv: int
    tensor_data_bytes: int
    vocab_size: int
    def __init__(self, architecture: _Optional[str] = ..., name: _Optional[str] = ..., parameter_count: _Optional[int] = ..., quantization: _Optional[str] = ..., context_length: _Optional[int] = ..., embedding_length: _Optional[int] = ..., block_count: _Optional[int] = ..., chat_template: _Optional[str] = ..., gguf_version: _Optional[int] = ..., head_count: _Optional[int] = ..., head_count_kv: _Optional[int] = ..., tensor_data_bytes: _Optional[int] = ..., vocab_size: _Optional[int] = ...) -> None: ...

class InstallRecord(_message.Message):
    __slots__ = ("name", "ref", "revision", "artifacts", "kind", "format", "size_bytes", "gguf", "created_at", "last_used_at", "diffusion", "derived", "transformers", "speech", "adapter")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GGUF_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_AT_FIELD_NUMBER: _ClassVar[int]
    DIFFUSION_FIELD_NUMBER: _ClassVar[int]
    DERIVED_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMERS_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    ref: ModelRef
    revision: Revision
    artifacts: _containers.RepeatedCompositeFieldContainer[Artifact]
    kind: ModelKind
    format: ArtifactFormat
    size_bytes: int
    gguf: GgufInfo
    created_at: _timestamp_pb2.Timestamp
    last_used_at: _timestamp_pb2.Timestamp
    diffusion: DiffusionInfo
    derived: DerivedModel
    transformers: TransformersInfo
    speech: SpeechInfo
    adapter: AdapterInfo
    def __init__(self, name: _Optional[str] = ..., ref: _Optional[_Union[ModelRef, _Mapping]] = ..., revision: _Optional[_Union[Revision, _Mapping]] = ..., artifacts: _Optional[_Iterable[_Union[Artifact, _Mapping]]] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., format: _Optional[_Union[ArtifactFormat, str]] = ..., size_bytes: _Optional[int] = ..., gguf: _Optional[_Union[GgufInfo, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_used_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., diffusion: _Optional[_Union[DiffusionInfo, _Mapping]] = ..., derived: _Optional[_Union[DerivedModel, _Mapping]] = ..., transformers: _Optional[_Union[TransformersInfo, _Mapping]] = ..., speech: _Optional[_Union[SpeechInfo, _Mapping]] = ..., adapter: _Optional[_Union[AdapterInfo, _Mapping]] = ...) -> None: ...

class TransformersInfo(_message.Message):
    __slots__ = ("architecture", "model_type", "parameter_count", "weight_bytes", "dtype", "context_length", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "chat_template", "sentence_transformers", "pooling", "normalize", "embedding_dimensions")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_TRANSFORMERS_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    model_type: str
    parameter_count: int
    weight_bytes: int
    dtype: str
    context_length: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    chat_template: str
    sentence_transformers: bool
    pooling: str
    normalize: bool
    embedding_dimensions: int
    def __init__(self, architecture: _Optional[str] = ..., model_type: _Optional[str] = ..., parameter_count: _Optional[int] = ..., weight_bytes: _Optional[int] = ..., dtype: _Optional[str] = ..., context_length: _Optional[int] = ..., hidden_size: _Optional[int] = ..., num_layers: _Optional[int] = ..., num_heads: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., chat_template: _Optional[str] = ..., sentence_transformers: _Optional[bool] = ..., pooling: _Optional[str] = ..., normalize: _Optional[bool] = ..., embedding_dimensions: _Optional[int] = ...) -> None: ...

class SpeechInfo(_message.Message):
    __slots__ = ("engine", "voices", "sample_rate", "language")
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    engine: str
    voices: _containers.RepeatedScalarFieldContainer[str]
    sample_rate: int
    language: str
    def __init__(self, engine: _Optional[str] = ..., voices: _Optional[_Iterable[str]] = ..., sample_rate: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("base", "method", "rank", "alpha", "target_modules", "job_id", "final_loss", "steps", "gguf_adapter")
    BASE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GGUF_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    base: str
    method: str
    rank: int
    alpha: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    job_id: str
    final_loss: float
    steps: int
    gguf_adapter: str
    def __init__(self, base: _Optional[str] = ..., method: _Optional[str] = ..., rank: _Optional[int] = ..., alpha: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ..., job_id: _Optional[str] = ..., final_loss: _Optional[float] = ..., steps: _Optional[int] = ..., gguf_adapter: _Optional[str] = ...) -> None: ...

class DerivedModel(_message.Message):
    __slots__ = ("base", "system", "template", "messages", "params", "context_length", "license")
    BASE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    base: str
    system: str
    template: str
    messages: _containers.RepeatedCompositeFieldContainer[DerivedMessage]
    params: SamplingDefaults
    context_length: int
    license: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, base: _Optional[str] = ..., system: _Optional[str] = ..., template: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[DerivedMessage, _Mapping]]] = ..., params: _Optional[_Union[SamplingDefaults, _Mapping]] = ..., context_length: _Optional[int] = ..., license: _Optional[_Iterable[str]] = ...) -> None: ...

class DerivedMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingDefaults(_message.Message):
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

class DiffusionInfo(_message.Message):
    __slots__ = ("family", "has_denoiser", "has_vae", "has_text_encoder", "native_size", "parameters", "dtypes")
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    HAS_DENOISER_FIELD_NUMBER: _ClassVar[int]
    HAS_VAE_FIELD_NUMBER: _ClassVar[int]
    HAS_TEXT_ENCODER_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DTYPES_FIELD_NUMBER: _ClassVar[int]
    family: str
    has_denoiser: bool
    has_vae: bool
    has_text_encoder: bool
    native_size: int
    parameters: int
    dtypes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, family: _Optional[str] = ..., has_denoiser: _Optional[bool] = ..., has_vae: _Optional[bool] = ..., has_text_encoder: _Optional[bool] = ..., native_size: _Optional[int] = ..., parameters: _Optional[int] = ..., dtypes: _Optional[_Iterable[str]] = ...) -> None: ...
