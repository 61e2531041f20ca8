"""The one tree of ohmygpu errors.

Each error also inherits the matching builtin (a missing model is a LookupError), carries its
fields as attributes, and names its gRPC status and HTTP status once. Dialects (OpenAI, Ollama,
gRPC) render the envelope only at the edge, from these attributes. Messages never contain paths
inside OMG_HOME: they are shown to remote clients.
"""

from __future__ import annotations


class OmgError(Exception):
    """Base of every error the daemon reports to a client."""

    grpc_code: str = "INTERNAL"  # a grpc.StatusCode name; core does not import grpc
    http_status: int = 500
    openai_type: str = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(OmgError, ValueError):
    """The request is malformed or a field has a bad value."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 400
    openai_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidName(InvalidArgument):
    """A model name, repo id, revision or filename that could escape a directory or is malformed."""


class InvalidDigest(InvalidArgument):
    """A digest that is not exactly `sha256:<64 lowercase hex>`."""


class InvalidModelFile(InvalidArgument):
    """A file that is not a model file we can read (wrong magic, truncated, absurd header)."""


class UnloadableModel(InvalidModelFile):
    """A GGUF file (right magic) that llama.cpp could not load: a broken header, tensor data
    outside the file, an unknown architecture, a chat template that does not compile. Said as it
    is ("the file is not a loadable model: ..."): only a real GGUF file gets this answer."""


class IncompleteSplitModel(InvalidModelFile):
    """A part of a split GGUF model that cannot load as named: a later part, or parts missing.
    Said as it is even where other file errors are kept vague: the caller named a real model."""


class UnusablePart(InvalidModelFile):
    """A file of a multi-file diffusion model that is a real model file in the wrong place (a
    second VAE, a text encoder given as the diffusion model). Said as it is: the caller named it."""


class UnsupportedMediaType(InvalidArgument):
    """A body whose Content-Type is not the one the route reads (text/plain where JSON is
    expected: what a cross-site page can send without a CORS preflight)."""

    http_status = 415


class ContextLengthExceeded(InvalidArgument):
    """A prompt longer than the model's context window, where truncation was not asked for
    (OpenAI's 400 with code context_length_exceeded)."""

    openai_code = "context_length_exceeded"
    reason = "context_length_exceeded"  # crosses the worker's gRPC boundary as omg-error metadata

    def __init__(self, message: str, *, param: str | None = "messages") -> None:
        super().__init__(message, param=param)


class PayloadTooLarge(OmgError):
    """A request body over the configured limit."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413
    openai_type = "invalid_request_error"


class NotFound(OmgError, LookupError):
    """Something named in the request does not exist."""

    grpc_code = "NOT_FOUND"
    http_status = 404
    openai_type = "invalid_request_error"


class ModelNotFound(NotFound):
    """No model of that name in the store."""

    def __init__(self, name: str) -> None:
        super().__init__(f"model '{name}' not found; `omg model list` shows the models you have")
        self.name = name


class AlreadyExists(OmgError):
    """A create that would overwrite something."""

    grpc_code = "ALREADY_EXISTS"
    http_status = 409
    openai_type = "invalid_request_error"


class Unauthenticated(OmgError, PermissionError):
    """A missing or wrong token."""

    grpc_code = "UNAUTHENTICATED"
    http_status = 401
    openai_type = "authentication_error"


class PermissionDenied(OmgError, PermissionError):
    """Not allowed (a Host header that is not ours, a management call without rights)."""

    grpc_code = "PERMISSION_DENIED"
    http_status = 403
    openai_type = "permission_error"


class MissingExtra(OmgError, ImportError):
    """A runtime's inference library is not installed."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 501
    openai_type = "server_error"

    def __init__(self, runtime: str, extra: str) -> None:
        super().__init__(
            f"the {runtime} runtime is not installed; run: pip install 'ohmygpu[{extra}]'"
        )
        self.runtime = runtime
        self.extra = extra


class WorkerFailed(OmgError, RuntimeError):
    """A worker died, failed to start, or failed a request."""

    grpc_code = "INTERNAL"
    http_status = 500
    openai_type = "server_error"

    def __init__(self, message: str, *, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class FailedPrecondition(OmgError):
    """The request is valid but the state forbids it now (a pinned model asked to unload)."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 409
    openai_type = "invalid_request_error"


class Unimplemented(OmgError, NotImplementedError):
    """The request asks for something this daemon does not do (pushing to a registry)."""

    grpc_code = "UNIMPLEMENTED"
    http_status = 501
    openai_type = "invalid_request_error"


class Unavailable(OmgError):
    """The daemon or a worker cannot take the request now (starting, shutting down, busy)."""

    grpc_code = "UNAVAILABLE"
    http_status = 503
    openai_type = "server_error"


class ServerBusy(OmgError):
    """The request queue is full (ollama's OLLAMA_MAX_QUEUE); retry after a moment."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 503
    openai_type = "server_error"


class RateLimited(Unavailable):
    """The hub answered 429 more often than we retry."""


class CorruptDownload(OmgError, ValueError):
    """The bytes received do not hash to what the hub said; nothing was published."""

    grpc_code = "DATA_LOSS"
    http_status = 502
    openai_type = "server_error"


class CorruptIndex(OmgError):
    """The index (OMG_HOME/store.db) or one of its records cannot be read: damaged on disk."""

    grpc_code = "DATA_LOSS"
    http_status = 500
    openai_type = "server_error"


class InsufficientSpace(OmgError, OSError):
    """Not enough free disk space for the pull."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 507
    openai_type = "server_error"


# gRPC status name -> error class, for clients turning a status back into an error.
BY_GRPC_CODE: dict[str, type[OmgError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "RESOURCE_EXHAUSTED": PayloadTooLarge,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": AlreadyExists,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "FAILED_PRECONDITION": FailedPrecondition,
    "UNAVAILABLE": Unavailable,
    "UNIMPLEMENTED": Unimplemented,
    "INTERNAL": WorkerFailed,
}

# Errors a worker names in its status's `omg-error` trailing metadata, so the daemon can raise
# the same class (and a dialect render its own code) instead of a generic one.
BY_REASON: dict[str, type[OmgError]] = {"context_length_exceeded": ContextLengthExceeded}
