"""Which fields of Ollama's API this daemon honours, and the refusal of the others.

Ollama's API (its docs/api.md and the `ollama` client's request types) defines more than a
llama.cpp daemon without a vision runtime or a registry serves. Nothing is dropped in silence:
images sent to a text model, or `mirostat` asked for and not applied, make an answer that looks
right and is not. So every field is honoured (HONOURED) or, once set to anything but the value
that asks for nothing, refused with a 400 that names it (REFUSED, with the reason given).

Options (`options` on chat, generate and embed; `parameters` on create) follow the same rule,
key by key (OPTIONS): honoured, accepted only at the value that changes nothing here
(`mirostat: 0`, `repeat_last_n: 64`, `use_mmap: true`, ...), or refused. A key Ollama does not
define is refused too (Ollama itself ignores one with a warning in its log, which a client never
sees). `think` (true, false, or a level, which means true), `logprobs` and `top_logprobs` are
honoured; a message's `thinking` (an earlier answer's, sent back) is accepted and left out of the
prompt, as chat templates leave past thinking out.
"""

from __future__ import annotations

from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.gateway.body import Fields
from ohmygpu.gateway.sampling import OLLAMA, parse_sampling
from ohmygpu.run.v1 import run_spec_pb2

_VISION = "images need a vision model, and this daemon has no vision runtime yet; send text only"

# Per endpoint (a message of /api/chat is "message"): the fields honoured.
HONOURED: dict[str, frozenset[str]] = {
    "chat": frozenset({"model", "messages", "tools", "format", "options", "stream", "keep_alive", "truncate",
                       "think", "logprobs", "top_logprobs"}),
    "message": frozenset({"role", "content", "tool_calls", "tool_name", "name", "tool_call_id", "thinking"}),
    "generate": frozenset({"model", "prompt", "system", "raw", "format", "options", "stream", "keep_alive",
                           "truncate", "think", "logprobs", "top_logprobs"}),
    "embed": frozenset({"model", "input", "truncate", "dimensions", "keep_alive", "options"}),
    "embeddings": frozenset({"model", "prompt", "keep_alive", "options"}),
    "show": frozenset({"model", "name"}),
    "create": frozenset({"model", "name", "from", "files", "system", "template", "parameters", "messages",
                         "license", "stream"}),
    "copy": frozenset({"source", "destination"}),
    "delete": frozenset({"model", "name"}),
    # `insecure` lets ollama reach a registry over plain HTTP or with an unverified certificate:
    # it allows, it never requires, and pulls here stay HTTPS and sha256-verified whatever it
    # says. Open WebUI sends `insecure: true` with every pull.
    "pull": frozenset({"model", "name", "stream", "insecure"}),
    "ps": frozenset(),  # GET, no body
}

# Per endpoint: field -> why it is refused (the 400's text after the field's name).
REFUSED: dict[str, dict[str, str]] = {
    "chat": {"shift": "(sliding the window during generation) is not supported: generation stops at the "
                      "window's end (done_reason \"length\")"},
    "message": {"images": _VISION},
    "generate": {"images": _VISION,
                 "suffix": "(fill-in-the-middle) is not supported yet",
                 "template": "per request is not supported: make a model with it (POST /api/create with "
                             "'template') and use that model",
                 "context": "(token context from an earlier /api/generate) is not supported: send the "
                            "conversation to /api/chat instead",
                 "width": "is for image models: generate images with /v1/images/generations",
                 "height": "is for image models: generate images with /v1/images/generations",
                 "steps": "is for image models: generate images with /v1/images/generations",
                 "shift": "(sliding the window during generation) is not supported: generation stops at the "
                          "window's end (done_reason \"length\")"},
    "show": {"verbose": "model info is not kept (tokenizer arrays are not in the index)"},
    "create": {"quantize": "is not supported: quantize with llama.cpp's llama-quantize, then create the model "
                           "from the quantized GGUF",
               "adapters": "(LoRA) are not supported yet",
               "modelfile": "text is not read: send its instructions as fields (from, files, system, template, "
                            "parameters, messages), as the ollama client does",
               "path": "is not read: send the Modelfile's instructions as fields, as the ollama client does"},
}

# Options: the keys honoured (sampling, and the window a request may narrow to) ...
_SAMPLING_KEYS = frozenset(n.json for n in OLLAMA.names) | {"stop"}
# ... keys accepted only at the value that changes nothing here (what llama.cpp does anyway) ...
_NO_EFFECT: dict[str, object] = {
    "mirostat": 0, "typical_p": 1.0, "tfs_z": 1.0, "repeat_last_n": 64, "penalize_newline": False,
    "use_mmap": True, "use_mlock": False, "numa": False, "low_vram": False, "vocab_only": False,
    "f16_kv": True, "logits_all": False, "embedding_only": False,
}
# ... keys whose value matters only with something that never happens here: a window shift
# (num_keep), mirostat (refused above unless 0) ...
_MOOT = frozenset({"num_keep", "mirostat_tau", "mirostat_eta"})
# ... and the load options a request cannot change (Ollama reloads the model for them).
_LOAD = frozenset({"num_batch", "num_gpu", "main_gpu", "num_thread"})
_LOAD_WHY = ("is a load option: pin the model with a run (POST /v1/runs, `omg run`) to choose its GPU layers, "
             "threads or device")


def _set(value: Any) -> bool:
    """Whether a field's value asks for something (None, false, 0 and empty ask for nothing)."""
    return value not in (None, False, 0, "", [], {})


def check(f: Fields, endpoint: str) -> None:
    """Refuse, naming it (with `f`'s prefix), a field of `endpoint` that REFUSED lists and the
    body sets. Raises InvalidArgument."""
    for key, why in REFUSED.get(endpoint, {}).items():
        if _set(f.data.get(key)):
            name = f.prefix + key
            raise InvalidArgument(f"'{name}' {why}", param=name)


def _check_options(opts: Fields, *, no_sampling: str = "") -> None:
    """Refuse each key of `opts` the table above does not let through; `no_sampling`: why the
    sampling keys are refused too (embeddings), empty when they are honoured."""
    for key, value in opts.data.items():
        name = opts.prefix + key
        if value is None or key == "num_ctx" or key in _MOOT:
            continue
        if key in _SAMPLING_KEYS:
            if no_sampling:
                raise InvalidArgument(f"'{name}' {no_sampling}", param=name)
        elif key in _NO_EFFECT:
            want = _NO_EFFECT[key]
            if value != want or isinstance(value, bool) != isinstance(want, bool):
                raise InvalidArgument(f"'{name}' is not supported (only {_json(want)}, what llama.cpp does "
                                      "here, is accepted)", param=name)
        elif key in _LOAD:
            raise InvalidArgument(f"'{name}' {_LOAD_WHY}", param=name)
        else:
            raise InvalidArgument(f"'{name}' is not an option Ollama defines", param=name)


def _json(value: object) -> str:
    return "true" if value is True else "false" if value is False else repr(value)


def sampling_options(body: Fields, key: str, limit: int) -> tuple[run_spec_pb2.SamplingParams, int]:
    """Ollama's `options` (or create's `parameters`: `key`) -> (SamplingParams, num_ctx or 0),
    every key checked against the table above. Raises InvalidArgument naming the key."""
    opts = Fields(body.obj(key) or {}, key + ".")
    _check_options(opts)
    params = parse_sampling(opts, OLLAMA, max_tokens_limit=limit)
    return params, opts.int("num_ctx", 1, 1 << 24) or 0


def embed_options(body: Fields) -> None:
    """Check an embedding request's `options`: sampling has no effect on embeddings and the
    window is the loaded one, so only the keys that ask for nothing pass. Raises InvalidArgument."""
    opts = Fields(body.obj("options") or {}, "options.")
    _check_options(opts, no_sampling="has no effect on embeddings")
    if opts.data.get("num_ctx") is not None:
        raise InvalidArgument("'options.num_ctx' cannot narrow an embedding model's window: embeddings use the "
                              "loaded one (set OMG_CONTEXT_LENGTH or a run's context)", param="options.num_ctx")


_THINK_LEVELS = ("low", "medium", "high")  # gpt-oss's levels: all of them mean "think" here


def think_of(f: Fields) -> bool | None:
    """`think`: true, false, or a level (true); None when not sent (the model's default)."""
    value = f.data.get("think")
    if value is None or isinstance(value, bool):
        return value
    if value in _THINK_LEVELS:
        return True
    raise InvalidArgument(f"'{f.prefix}think' must be true, false, or one of {list(_THINK_LEVELS)}",
                          param=f.prefix + "think")


def logprobs_of(f: Fields) -> tuple[bool, int]:
    """(`logprobs`, `top_logprobs`), checked; the daemon refuses top_logprobs without logprobs."""
    return f.bool("logprobs", False), f.int("top_logprobs", 0, 20) or 0
