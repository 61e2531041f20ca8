"""Who may do what: inference with OMG_TOKEN, management with OMG_ADMIN_TOKEN when one is set.

Pulling, adding, creating (and uploading files for), deleting and collecting models, cancelling
jobs, starting and stopping runs, unloading models and stopping the daemon are management;
everything else (chat, completion, embeddings, transcription, listings, events) is inference.
With OMG_ADMIN_TOKEN set, management needs it, so a token handed to an application cannot also
delete models or pull 100 GB. The admin token is accepted for inference too. One table here
serves gRPC and HTTP.

Verifying models (hashing every byte of the store) is management too: eight at once starved the
daemon. What only management may see, too: local paths (a model's files, the daemon's home) are
shown to callers who may manage the daemon and left out for the others (`caller_manages`).
Unloading is management on every path: UnloadModel, `keep_alive: 0` on a request and Ollama's
empty-prompt unload follow one rule (daemon/orchestrator.py `unload`).
"""

from __future__ import annotations

import contextvars
import hmac

from ohmygpu.core.errors import OmgError, PermissionDenied, Unauthenticated

# Full gRPC method names ("package.Service.Method") that manage rather than infer.
ADMIN_METHODS = frozenset({
    "ohmygpu.api.v1.ModelService.InstallModel",
    "ohmygpu.api.v1.ModelService.AddModel",
    "ohmygpu.api.v1.ModelService.DeleteModel",
    "ohmygpu.api.v1.ModelService.AliasModel",
    "ohmygpu.api.v1.ModelService.CreateModel",
    "ohmygpu.api.v1.ModelService.GarbageCollect",
    "ohmygpu.api.v1.ModelService.VerifyModels",
    "ohmygpu.api.v1.JobService.CancelJob",
    "ohmygpu.api.v1.RunService.CreateRun",
    "ohmygpu.api.v1.RunService.StopRun",
    "ohmygpu.api.v1.SystemService.Shutdown",
    "ohmygpu.api.v1.SystemService.UnloadModel",
    "ohmygpu.api.v1.TrainService.CreateTrainJob",
})
# Methods open without a token, as the HTTP probes (/livez, /readyz) are: the standard health
# check answers only whether the server serves.
OPEN_METHODS = frozenset({"grpc.health.v1.Health.Check"})
# Ollama's management endpoints (method, path).
OLLAMA_ADMIN = frozenset({("POST", "/api/pull"), ("DELETE", "/api/delete"), ("POST", "/api/copy"),
                          ("POST", "/api/create"), ("POST", "/api/push")})
# ... and those under a path (method, prefix): uploading a blob to make a model from, and asking
# whether one was uploaded (an existence oracle only the admin needs).
OLLAMA_ADMIN_PREFIXES = (("POST", "/api/blobs/"), ("HEAD", "/api/blobs/"))


def is_ollama_admin(method: str, path: str) -> bool:
    """Whether the Ollama request `method` `path` manages the daemon."""
    return (method, path) in OLLAMA_ADMIN or any(
        method == verb and path.startswith(prefix) for verb, prefix in OLLAMA_ADMIN_PREFIXES)


# Whether the request being served presented the admin token. Set by `check`, which both edges
# (the HTTP security middleware, the gRPC token interceptor) call for every request whenever a
# token is configured, in the task that then serves it; read by the layers whose answer depends
# on who asks (`caller_manages`), so the caller need not be threaded through every signature.
_caller_admin: contextvars.ContextVar[bool] = contextvars.ContextVar("omg_caller_admin", default=False)


def caller_manages(admin_token: str) -> bool:
    """Whether the request being served may manage the daemon: always when no admin token is
    configured (every caller may), else only when it presented that token."""
    return not admin_token or _caller_admin.get()


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` value (LocalAI CVE-2024-7010)."""
    if not expected:
        return True
    given = (header or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), expected.encode())


def presented(authorization: str | None, api_key: str | None) -> str | None:
    """The credential an HTTP request presents, as an Authorization value for `check`: its
    `Authorization` header, else its `x-api-key` header (where Anthropic's SDKs and Claude Code
    send the key) taken as a bearer token. When both are sent, Authorization is the one checked."""
    if authorization or not api_key:
        return authorization
    return "Bearer " + api_key


def check(authorization: str | None, *, admin: bool, token: str, admin_token: str) -> OmgError | None:
    """The error for a call with this Authorization header, or None when it may proceed. Also
    records, for the rest of this request, whether the caller is the admin (`caller_manages`)."""
    is_admin = bool(admin_token) and token_matches(admin_token, authorization)
    _caller_admin.set(is_admin)
    if is_admin:
        return None  # the admin token opens everything
    if admin and admin_token:
        if authorization and (not token or token_matches(token, authorization)):
            return PermissionDenied("this action manages the daemon and needs the admin token (OMG_ADMIN_TOKEN)")
        return Unauthenticated("this action needs the admin token (OMG_ADMIN_TOKEN)")
    if token and not token_matches(token, authorization):
        return Unauthenticated("missing or wrong bearer token (OMG_TOKEN)")
    return None
