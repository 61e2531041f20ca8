"""Derived models: what ModelService.CreateModel (Ollama's /api/create, a Modelfile) adds to a
model's files, how it is checked and merged, and how it changes a request.

A derived model is an InstallRecord with `derived` set (assets.proto `DerivedModel`): its
artifacts are its base's files (shared, never copied) or uploaded ones (core/blobs.py), and it
carries a system prompt, seed messages, sampling defaults, a context window and a chat template.
The daemon applies the request-side parts on every path (daemon/orchestrator.py: OpenAI, Ollama
and gRPC alike), the load-side parts go into the worker's RunSpec (daemon/specs.py) and the
llama.cpp worker renders the template (runtimes/llamacpp/loading.py). Pure, apart from compiling
a template in the bounded child process of core/gguf_check.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import sampling
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.gguf_check import compile_error
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.names import parse_model_name
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256
MAX_TEXT_CHARS = 1 << 20  # system prompt, each message, the template, each license
MAX_LICENSES = 16
MAX_CONTEXT = 1 << 24  # as a request's options.num_ctx
# Ollama's templates are Go templates ("{{ .System }}", "{{ if .Prompt }}", "{{ range .Messages }}"):
# Jinja cannot compile them, and their meaning differs, so they are named in the refusal.
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:\.[A-Z]|(?:if|range|with|end|else)\b[^}]*\.[A-Z]|end\s*-?\}\})")


def sampling_params(derived: assets_pb2.DerivedModel) -> run_spec_pb2.SamplingParams:
    """A derived model's sampling defaults as the SamplingParams requests carry (copied by field
    name: SamplingDefaults mirrors SamplingParams)."""
    out = run_spec_pb2.SamplingParams()
    for field, value in derived.params.ListFields():
        if field.name == "stop":
            out.stop.extend(value)
        else:
            setattr(out, field.name, value)
    return out


def sampling_defaults(params: run_spec_pb2.SamplingParams) -> assets_pb2.SamplingDefaults:
    """SamplingParams (as a dialect parsed them) as a derived model stores them; raises
    InvalidArgument for a field SamplingDefaults does not hold."""
    out = assets_pb2.SamplingDefaults()
    for field, value in params.ListFields():
        if field.name not in assets_pb2.SamplingDefaults.DESCRIPTOR.fields_by_name:
            raise InvalidArgument(f"'{field.name}' cannot be a model's default", param=field.name)
        if field.name == "stop":
            out.stop.extend(value)
        else:
            setattr(out, field.name, value)
    return out


def merged(inherited: assets_pb2.DerivedModel, asked: assets_pb2.DerivedModel) -> assets_pb2.DerivedModel:
    """What a model made from a (possibly derived) base holds: the base's settings, each replaced
    by the one asked for when it is set (sampling defaults field by field, as Ollama merges
    PARAMETER lines); `base` is the one asked for."""
    out = assets_pb2.DerivedModel()
    out.CopyFrom(inherited)
    out.base = asked.base
    if asked.system:
        out.system = asked.system
    if asked.template:
        out.template = asked.template
    if asked.messages:
        del out.messages[:]
        out.messages.extend(asked.messages)
    if asked.license:
        del out.license[:]
        out.license.extend(asked.license)
    if asked.context_length:
        out.context_length = asked.context_length
    for field, value in asked.params.ListFields():
        if field.name == "stop":
            del out.params.stop[:]
            out.params.stop.extend(value)
        else:
            setattr(out.params, field.name, value)
    return out


def check(derived: assets_pb2.DerivedModel, record: assets_pb2.InstallRecord, *, max_tokens_limit: int) -> None:
    """Raise InvalidArgument, naming Ollama's field, for what a derived model cannot hold: a
    setting its kind of model has no use for, texts past their bounds, a role not in ROLES,
    sampling defaults out of core/sampling.py's bounds, or a template that does not compile in
    the chat-template sandbox (Ollama's Go templates are named as such). Compiling runs a child
    process: call it off the event loop."""
    if record.format != assets_pb2.ARTIFACT_FORMAT_GGUF:
        raise InvalidArgument(f"model '{derived.base or record.name}' is not a GGUF model: only GGUF models can be "
                              "made into new ones (use copy for another name)", param="from")
    chats = record.kind in (assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_UNSPECIFIED)
    for name, given in (("system", bool(derived.system)), ("template", bool(derived.template)),
                        ("messages", bool(derived.messages))):
        if given and not chats:
            raise InvalidArgument(f"'{name}' applies to chat models; '{derived.base or record.name}' is an "
                                  "embedding model", param=name)
    for name, text in (("system", derived.system), ("template", derived.template),
                       *((f"license[{i}]", t) for i, t in enumerate(derived.license))):
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"'{name}' is longer than {MAX_TEXT_CHARS} characters", param=name)
    if len(derived.license) > MAX_LICENSES:
        raise InvalidArgument(f"'license' holds more than {MAX_LICENSES} texts", param="license")
    if len(derived.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"'messages' holds more than {MAX_MESSAGES} messages", param="messages")
    for i, m in enumerate(derived.messages):
        if m.role not in ROLES:
            raise InvalidArgument(f"'messages[{i}].role' must be one of {', '.join(ROLES)}", param=f"messages[{i}].role")
        if len(m.content) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"'messages[{i}].content' is longer than {MAX_TEXT_CHARS} characters",
                                  param=f"messages[{i}].content")
    if derived.context_length > MAX_CONTEXT:
        raise InvalidArgument(f"'parameters.num_ctx' must be at most {MAX_CONTEXT}", param="parameters.num_ctx")
    try:
        sampling.check(sampling_params(derived), max_tokens_limit=max_tokens_limit)
    except InvalidArgument as e:
        raise InvalidArgument(f"parameters: {e.message}", param=f"parameters.{e.param}") from None
    if derived.template:
        if _GO_TEMPLATE.search(derived.template):
            raise InvalidArgument("'template' is an Ollama (Go) template; this daemon renders Jinja chat templates "
                                  "as models ship them in tokenizer.chat_template (e.g. {% for message in messages %})",
                                  param="template")
        why = compile_error(derived.template)
        if why:
            raise InvalidArgument(f"'template' does not compile as a Jinja chat template: {why}", param="template")


def derive(base: assets_pb2.InstallRecord, name: str, asked: assets_pb2.DerivedModel) -> assets_pb2.InstallRecord:
    """The record of model `name` made from `base`: the same files, `base`'s derived settings
    merged with `asked`'s. Raises InvalidName. Check it with `check` before storing it."""
    record = assets_pb2.InstallRecord()
    record.CopyFrom(base)
    record.name = parse_model_name(name)
    record.ClearField("last_used_at")
    record.created_at.CopyFrom(timestamp())
    wanted = assets_pb2.DerivedModel()
    wanted.CopyFrom(asked)
    # Made again from itself (a Modelfile edited and created anew): it keeps the base it had.
    wanted.base = base.derived.base if base.name == record.name else base.name
    record.derived.CopyFrom(merged(base.derived, wanted))
    return record


def conversation(messages: Iterable[runtime_pb2.ChatMessage],
                 derived: assets_pb2.DerivedModel) -> list[runtime_pb2.ChatMessage]:
    """A request's messages with a derived model's start: its system prompt first when the
    request has no system message, then its messages, after the request's leading system
    messages and before the rest."""
    given = list(messages)
    lead = 0
    while lead < len(given) and given[lead].role == "system":
        lead += 1
    head = given[:lead] or ([runtime_pb2.ChatMessage(role="system", content=derived.system)]
                            if derived.system and not any(m.role == "system" for m in given) else [])
    seeds = [runtime_pb2.ChatMessage(role=m.role, content=m.content) for m in derived.messages]
    return [*head, *seeds, *given[lead:]]


def adds_to_chat(derived: assets_pb2.DerivedModel) -> bool:
    """Whether `conversation` changes a request's messages."""
    return bool(derived.system or derived.messages)
