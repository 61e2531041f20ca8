"""The Anthropic Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`):
translation between Anthropic's JSON and the daemon API's ChatRequest, nothing more.

A request becomes one ChatRequest: `system` a system message; a user message's text blocks a
user message and each `tool_result` block a `tool` message answering its `tool_use_id`; an
assistant message's text its content and its `tool_use` blocks its tool calls; `tools`
(`input_schema`) and `tool_choice` (auto, any, tool, none) the contract's tools; `max_tokens`
(required, as Anthropic requires it), `stop_sequences`, `temperature`, `top_p` and `top_k`
through gateway/sampling.py. Several text blocks are joined with a blank line; a tool result
with `is_error` reaches the model as "Error: <content>" (the contract's tool message has no flag).

Nothing is silently ignored: a field or block Anthropic defines that this server cannot honour
(images, documents, server tools, containers, MCP servers, a final assistant message
to continue, ...) is a 400 naming it, as is a field Anthropic does not define. What is accepted
without effect is documented as harmless: `metadata`, `service_tier`, `inference_geo`,
`speed: "standard"`, the `citations` an earlier answer's text blocks carried, earlier turns'
thinking blocks sent back (templates leave past thinking out), and `cache_control` anywhere (the daemon reuses a prompt's cached prefix on its
own and reports it as `cache_read_input_tokens`). Two refusals are worded for Anthropic's
clients: a missing model says how to name a local one, and a prompt over the context window
starts "prompt is too long" (see _in_anthropics_words).

Usage follows Anthropic's meaning: `input_tokens` are the prompt tokens evaluated for this
request, `cache_read_input_tokens` those whose KV cache was reused; their sum is the prompt,
which is what count_tokens answers.

Thinking: `thinking: {"type": "enabled"}` asks a reasoning model (a template with a `<think>`
block) to think, and its thoughts come back as `thinking` blocks (streamed as thinking_delta,
closed by an empty signature_delta: nothing signs a local model's thinking); asked of a model
that cannot think it is a 400. Without it (or "disabled") the template is asked not to think,
as Anthropic's models do not unless asked; `budget_tokens` is bounded by max_tokens only. A stream's `message_start` cannot know them yet (the worker
reports usage with its last message): it says 0, and `message_delta` carries the totals.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ohmygpu.core.errors import (
    ContextLengthExceeded,
    InvalidArgument,
    ModelNotFound,
    NotFound,
    OmgError,
    WorkerFailed,
)
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.gateway.body import Fields, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.sampling import ANTHROPIC, parse_sampling
from ohmygpu.gateway.streaming import ClosingStreamingResponse, ToolCalls, primed
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# The request fields read (or accepted as harmless, see above), per route.
_MESSAGE_FIELDS = frozenset({"model", "messages", "max_tokens", "system", "stop_sequences", "temperature",
                             "top_p", "top_k", "stream", "tools", "tool_choice", "thinking", "metadata",
                             "service_tier", "inference_geo", "speed", "cache_control"})
_COUNT_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "speed",
                           "cache_control"})
# Anthropic's fields this server cannot honour, with the reason given.
_CANNOT = {
    "container": "code execution containers are Anthropic's server tools",
    "mcp_servers": "the MCP connector runs on Anthropic's servers; connect the MCP servers to your client",
    "context_management": "server-side context editing is not done here",
    "output_config": "output effort and output formats are not supported here",
    "diagnostics": "prompt-cache diagnostics are not kept here",
}
_TEXT_KEYS = frozenset({"type", "text", "cache_control", "citations"})
_TOOL_USE_KEYS = frozenset({"type", "id", "name", "input", "cache_control"})
_TOOL_RESULT_KEYS = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
_TOOL_KEYS = frozenset({"type", "name", "description", "input_schema", "cache_control"})
_CHOICE_MODES = {"auto": runtime_pb2.TOOL_CHOICE_MODE_AUTO, "any": runtime_pb2.TOOL_CHOICE_MODE_REQUIRED,
                 "tool": runtime_pb2.TOOL_CHOICE_MODE_FUNCTION, "none": runtime_pb2.TOOL_CHOICE_MODE_NONE}
_CHOICE_KEYS = {"auto": frozenset({"type", "disable_parallel_tool_use"}),
                "any": frozenset({"type", "disable_parallel_tool_use"}),
                "tool": frozenset({"type", "name", "disable_parallel_tool_use"}), "none": frozenset({"type"})}
_JOIN = "\n\n"  # between text blocks of one message (or of the system prompt)


def _only(obj: dict[str, Any], allowed: frozenset[str], where: str = "") -> None:
    """Raise InvalidArgument naming the first key of `obj` not in `allowed`."""
    for key in obj:
        if key in allowed:
            continue
        name = f"{where}.{key}" if where else key
        if not where and key in _CANNOT:
            raise InvalidArgument(f"'{key}' is not supported by this server: {_CANNOT[key]}", param=key)
        raise InvalidArgument(f"'{name}': extra inputs are not permitted (not a field this server reads)",
                              param=name)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"'{where}' must be an object", param=where)
    return value


def _cache_control(block: dict[str, Any], where: str) -> None:
    """A cache_control marker is accepted when well formed (a hint: prefixes are reused anyway)."""
    value = block.get("cache_control")
    if value is None:
        return
    name = f"{where}.cache_control" if where else "cache_control"
    cf = Fields(_object(value, name), name + ".")
    _only(value, frozenset({"type", "ttl"}), name)
    if cf.str("type", required=True) != "ephemeral":
        raise InvalidArgument(f"'{name}.type' must be 'ephemeral'", param=name + ".type")
    if cf.str("ttl", default="5m") not in ("5m", "1h"):
        raise InvalidArgument(f"'{name}.ttl' must be '5m' or '1h'", param=name + ".ttl")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [_object(b, f"{where}[{j}]") for j, b in enumerate(content)]
    raise InvalidArgument(f"'{where}' must be a string or an array of content blocks", param=where)


def _unreadable(kind: Any, where: str, allowed: str) -> InvalidArgument:
    return InvalidArgument(f"'{where}.type' is {json.dumps(kind)}: this server reads only {allowed} blocks "
                           "(the models it serves take text)", param=where)


def _text(block: dict[str, Any], where: str) -> str:
    _only(block, _TEXT_KEYS, where)
    _cache_control(block, where)
    text = Fields(block, where + ".").str("text", required=True)
    if block.get("citations") is not None and not isinstance(block["citations"], list):
        raise InvalidArgument(f"'{where}.citations' must be an array", param=where + ".citations")
    return text


def _texts(content: Any, where: str) -> str:
    """Text blocks (or a string) as one string."""
    parts = []
    for j, block in enumerate(_blocks(content, where)):
        if block.get("type") != "text":
            raise _unreadable(block.get("type"), f"{where}[{j}]", "text")
        parts.append(_text(block, f"{where}[{j}]"))
    return _JOIN.join(parts)


def _tool_result(block: dict[str, Any], where: str) -> runtime_pb2.ChatMessage:
    _only(block, _TOOL_RESULT_KEYS, where)
    _cache_control(block, where)
    f = Fields(block, where + ".")
    call_id = f.str("tool_use_id", required=True)
    content = block.get("content")
    text = "" if content is None else _texts(content, where + ".content")
    if f.bool("is_error", False):
        text = "Error: " + text  # the contract's tool message has no flag: the model is told in words
    return runtime_pb2.ChatMessage(role="tool", tool_call_id=call_id, content=text)


def _user(blocks: list[dict[str, Any]], where: str) -> list[runtime_pb2.ChatMessage]:
    """A user turn: its tool results as tool messages, its text as user messages, in order."""
    out: list[runtime_pb2.ChatMessage] = []
    text: list[str] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = block.get("type")
        if kind == "text":
            text.append(_text(block, at))
        elif kind == "tool_result":
            if text:
                out.append(runtime_pb2.ChatMessage(role="user", content=_JOIN.join(text)))
                text = []
            out.append(_tool_result(block, at))
        else:
            raise _unreadable(kind, at, "text and tool_result (user)")
    if text or not out:
        out.append(runtime_pb2.ChatMessage(role="user", content=_JOIN.join(text)))
    return out


def _assistant(blocks: list[dict[str, Any]], where: str) -> runtime_pb2.ChatMessage:
    """An assistant turn: its text as content, its tool_use blocks as tool calls."""
    msg = runtime_pb2.ChatMessage(role="assistant")
    text: list[str] = []
    for j, block in enumerate(blocks):
        at = f"{where}[{j}]"
        kind = block.get("type")
        if kind == "text":
            text.append(_text(block, at))
        elif kind == "tool_use":
            _only(block, _TOOL_USE_KEYS, at)
            _cache_control(block, at)
            f = Fields(block, at + ".")
            call_input = f.obj("input")
            if call_input is None:
                raise InvalidArgument(f"'{at}.input' is required", param=at + ".input")
            msg.tool_calls.add(id=f.str("id", required=True), name=f.str("name", required=True),
                               arguments=json.dumps(call_input))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # an earlier turn's thinking, sent back: chat templates leave past thinking out
        else:
            raise _unreadable(kind, at, "text, tool_use and thinking (assistant)")
    msg.content = _JOIN.join(text)
    return msg


def chat_messages(raw: list[Any] | None) -> list[runtime_pb2.ChatMessage]:
    """Anthropic's messages as the contract's; none is the daemon API's to refuse (its one
    empty-messages rule). A final assistant message (a prefill, continued by Anthropic's models
    that support it) is refused: the chat template here always opens a new assistant turn."""
    out: list[runtime_pb2.ChatMessage] = []
    role = ""
    for i, m in enumerate(raw or []):
        where = f"messages[{i}]"
        _only(_object(m, where), frozenset({"role", "content"}), where)
        role = Fields(m, where + ".").str("role", required=True)
        if "content" not in m:
            raise InvalidArgument(f"'{where}.content' is required", param=where + ".content")
        blocks = _blocks(m["content"], where + ".content")
        if role == "user":
            out += _user(blocks, where + ".content")
        elif role == "assistant":
            out.append(_assistant(blocks, where + ".content"))
        else:
            raise InvalidArgument(f"'{where}.role' must be 'user' or 'assistant'", param=where + ".role")
    if role == "assistant":
        where = f"messages[{len(raw or []) - 1}]"
        raise InvalidArgument(f"'{where}' is a final assistant message (a prefill to continue), which this "
                              "server does not support: end with a user message", param=where)
    return out


def tools_of(f: Fields) -> tuple[list[runtime_pb2.Tool], runtime_pb2.ToolChoice, bool]:
    """The tools, the tool choice, and whether at most one tool use is wanted
    (`disable_parallel_tool_use`)."""
    tools = []
    for i, t in enumerate(f.list("tools") or []):
        where = f"tools[{i}]"
        _object(t, where)
        kind = t.get("type")
        if kind not in (None, "custom"):
            raise InvalidArgument(f"'{where}.type' is {json.dumps(kind)}, one of Anthropic's own tools (web "
                                  "search, code execution, bash, text editor, computer use, ...), which this "
                                  "server does not run; declare a custom tool with an input_schema instead",
                                  param=where + ".type")
        _only(t, _TOOL_KEYS, where)
        _cache_control(t, where)
        tf = Fields(t, where + ".")
        name = tf.str("name", required=True)
        schema = tf.obj("input_schema")
        if schema is None:
            raise InvalidArgument(f"'{where}.input_schema' is required", param=where + ".input_schema")
        tools.append(runtime_pb2.Tool(name=name, description=tf.str("description"),
                                      parameters_json=json.dumps(schema)))
    choice = runtime_pb2.ToolChoice()
    raw = f.obj("tool_choice")
    if raw is None:
        return tools, choice, False
    cf = Fields(raw, "tool_choice.")
    kind = cf.str("type", required=True)
    if kind not in _CHOICE_MODES:
        raise InvalidArgument("'tool_choice.type' must be 'auto', 'any', 'tool' or 'none'",
                              param="tool_choice.type")
    _only(raw, _CHOICE_KEYS[kind], "tool_choice")
    choice.mode = _CHOICE_MODES[kind]
    single = cf.bool("disable_parallel_tool_use", False)
    if kind in ("any", "tool"):
        if not tools:
            raise InvalidArgument(f"'tool_choice' of type '{kind}' needs tools", param="tool_choice")
        if kind == "tool":
            choice.function_name = cf.str("name", required=True)
            if choice.function_name not in {t.name for t in tools}:
                raise InvalidArgument(f"'tool_choice.name' is '{choice.function_name}', which is not among "
                                      "the tools", param="tool_choice.name")
        for t in tools:  # these become a grammar: checked before any queue (auto only describes them)
            check_schema(json.loads(t.parameters_json), param="tools")
    return tools, choice, single


def _check_harmless(f: Fields) -> None:
    """The fields accepted without effect, checked for their documented shapes."""
    thinking = f.obj("thinking")
    if thinking is not None:
        kind = thinking.get("type")
        if kind == "enabled":
            # The budget bounds thinking within max_tokens; llama.cpp cannot end a block early,
            # so max_tokens is what bounds it here (checked as Anthropic does).
            _only(thinking, frozenset({"type", "budget_tokens"}), "thinking")
            budget = Fields(thinking, "thinking.").int("budget_tokens", 1, 1 << 31)
            if budget is None:
                raise InvalidArgument("'thinking.budget_tokens' is required", param="thinking.budget_tokens")
        elif kind == "disabled":
            _only(thinking, frozenset({"type"}), "thinking")
        else:
            raise InvalidArgument("'thinking.type' must be 'enabled' or 'disabled'", param="thinking.type")
    metadata = f.obj("metadata")
    if metadata is not None:
        _only(metadata, frozenset({"user_id"}), "metadata")
        Fields(metadata, "metadata.").str("user_id")
    if f.str("service_tier", default="auto") not in ("auto", "standard_only"):
        raise InvalidArgument("'service_tier' must be 'auto' or 'standard_only'", param="service_tier")
    f.str("inference_geo")
    if f.str("speed", default="standard") != "standard":
        raise InvalidArgument("'speed' other than 'standard' is not supported by this server", param="speed")
    _cache_control(f.data, "")


@dataclass
class Turn:
    """A Messages request translated."""

    request: runtime_pb2.ChatRequest
    single_tool: bool = False  # disable_parallel_tool_use: at most one tool_use block


def translate(body: dict[str, Any], *, max_tokens_limit: int, counting: bool = False) -> Turn:
    """A Messages (or count_tokens, `counting`) request body as a ChatRequest; raises
    InvalidArgument naming the field."""
    _only(body, _COUNT_FIELDS if counting else _MESSAGE_FIELDS)
    f = Fields(body)
    _check_harmless(f)
    messages = []
    system = body.get("system")
    if system is not None:
        messages.append(runtime_pb2.ChatMessage(role="system", content=_texts(system, "system")))
    messages += chat_messages(f.list("messages"))
    tools, choice, single = tools_of(f)
    req = runtime_pb2.ChatRequest(model=f.str("model", required=True), messages=messages, tools=tools,
                                  tool_choice=choice)
    # Thinking is off unless asked, as in Anthropic's API: a reasoning model's template is told
    # so (Qwen3's enable_thinking); asked of a model that cannot think, it is refused.
    req.think = (f.obj("thinking") or {}).get("type") == "enabled"
    if not counting:
        if body.get("max_tokens") is None:
            raise InvalidArgument("'max_tokens' is required", param="max_tokens")
        req.params.CopyFrom(parse_sampling(f, ANTHROPIC, max_tokens_limit=max_tokens_limit))
        if req.params.max_tokens < 1:
            raise InvalidArgument("'max_tokens' must be at least 1", param="max_tokens")
    return Turn(req, single)


def _in_anthropics_words(e: OmgError) -> OmgError:
    """Two refusals said as Anthropic's clients understand them: a missing model says how to name
    a local one (clients name Anthropic's: Claude Code asks for claude-sonnet-...; no name is
    mapped to a local model behind the client's back), and a prompt over the context window
    starts "prompt is too long", which Claude Code reads as its cue to compact the conversation."""
    if isinstance(e, ModelNotFound):
        return NotFound(f"{e.message}. This server runs local models under their own names (`omg model list`, "
                        "GET /v1/models); ask for one of them (Claude Code: --model NAME, or ANTHROPIC_MODEL)")
    if isinstance(e, ContextLengthExceeded):
        return ContextLengthExceeded(f"prompt is too long: {e.message}", param=e.param)
    return e


def tool_id(call_id: str) -> str:
    """Anthropic's id for a runtime's tool call id ("call_ab12" -> "toolu_ab12")."""
    return "toolu_" + (call_id.removeprefix("call_") or uuid.uuid4().hex[:24])


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as its `input` object; {} for none, or for arguments cut off
    unfinished (the stop_reason then says max_tokens)."""
    try:
        value = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def stop_reason(final: runtime_pb2.ChatResponse, max_tokens: int) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished answer."""
    reason = final.finish_reason
    if reason == runtime_pb2.FINISH_REASON_TOOL_CALLS:
        return "tool_use", None
    if reason == runtime_pb2.FINISH_REASON_LENGTH:
        # Stopped before max_tokens: the context window ran out first.
        short = final.usage.completion_tokens < max_tokens
        return ("model_context_window_exceeded" if short else "max_tokens"), None
    if final.stop_sequence:
        return "stop_sequence", final.stop_sequence
    return "end_turn", None


def usage(u: runtime_pb2.Usage) -> dict[str, int]:
    return {"input_tokens": u.prompt_tokens - u.cached_tokens, "output_tokens": u.completion_tokens,
            "cache_read_input_tokens": u.cached_tokens, "cache_creation_input_tokens": 0}


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class AnthropicRoutes:
    """Handlers for /v1/messages and /v1/messages/count_tokens."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self.count_tokens, methods=["POST"]),
        ]

    async def count_tokens(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        turn = translate(body, max_tokens_limit=self.gw.settings.max_tokens_limit, counting=True)
        try:
            counted = await self.gw.api.count_tokens(runtime_pb2.CountTokensRequest(chat=turn.request))
        except (ModelNotFound, ContextLengthExceeded) as e:
            raise _in_anthropics_words(e) from None
        return JSONResponse({"input_tokens": counted.prompt_tokens})

    async def messages(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        turn = translate(body, max_tokens_limit=self.gw.settings.max_tokens_limit)
        stream = Fields(body).bool("stream", False)
        try:
            answers = await primed(self.gw.api.chat(turn.request))
        except (ModelNotFound, ContextLengthExceeded) as e:
            raise _in_anthropics_words(e) from None
        message = {"id": "msg_" + uuid.uuid4().hex, "type": "message", "role": "assistant",
                   "model": turn.request.model}
        if stream:
            return ClosingStreamingResponse(self._sse(answers, message, turn), media_type="text/event-stream",
                                            headers=_SSE_HEADERS)
        text: list[str] = []
        thought: list[str] = []
        calls = ToolCalls()
        final = runtime_pb2.ChatResponse()
        async for m in answers:
            if m.reasoning:
                thought.append(m.reasoning)
            if m.content:
                text.append(m.content)
            calls.add(d for d in m.tool_calls if not (turn.single_tool and d.index > 0))
            if m.finish_reason:
                final = m
        # A local model's thinking has no signature to verify: it is sent empty.
        content: list[dict[str, Any]] = [{"type": "thinking", "thinking": "".join(thought), "signature": ""}
                                         ] if thought else []
        content += [{"type": "text", "text": "".join(text)}] if text else []
        content += [{"type": "tool_use", "id": tool_id(c.id), "name": c.name, "input": tool_input(c.arguments)}
                    for c in calls.whole()]
        reason, sequence = stop_reason(final, turn.request.params.max_tokens)
        return JSONResponse({**message, "content": content, "stop_reason": reason, "stop_sequence": sequence,
                             "usage": usage(final.usage)})

    async def _sse(self, answers: AsyncIterator[runtime_pb2.ChatResponse], message: dict[str, Any],
                   turn: Turn) -> AsyncIterator[str]:
        """Anthropic's event sequence: message_start, per content block its start, deltas and
        stop, message_delta (stop reason, usage), message_stop; an error once started is an
        `error` event."""
        yield _event("message_start", {"type": "message_start", "message": {
            **message, "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
        yield _event("ping", {"type": "ping"})
        blocks = _Blocks()
        try:
            async for m in answers:
                if m.reasoning:
                    for event in blocks.thinking(m.reasoning):
                        yield event
                if m.content:
                    for event in blocks.text(m.content):
                        yield event
                for d in m.tool_calls:
                    if not (turn.single_tool and d.index > 0):
                        for event in blocks.tool(d):
                            yield event
                if m.finish_reason:
                    for event in blocks.close():
                        yield event
                    reason, sequence = stop_reason(m, turn.request.params.max_tokens)
                    yield _event("message_delta", {"type": "message_delta",
                                                   "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                                   "usage": usage(m.usage)})
        except OmgError as e:
            yield "event: error\ndata: " + stream_error_line(e, "anthropic") + "\n\n"
            return
        yield _event("message_stop", {"type": "message_stop"})


class _Blocks:
    """The content blocks of a streamed answer: a block starts when its first piece comes and
    stops when another begins or the answer ends. Returns the SSE events of each step."""

    def __init__(self) -> None:
        self.index = -1  # of the open block
        self.open: tuple[str, int] | None = None  # ("text", 0) or ("tool", call index)
        self.calls_seen: set[int] = set()
        self._text_head = ""  # a text delta's event up to its text

    def _start(self, key: tuple[str, int], block: dict[str, Any]) -> list[str]:
        events = self.close()
        self.index += 1
        self.open = key
        return events + [_event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                        "content_block": block})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def text(self, piece: str) -> list[str]:
        events = []
        if self.open != ("text", 0):
            events = self._start(("text", 0), {"type": "text", "text": ""})
            # Per token only the text is JSON-encoded; the envelope is formatted once per block.
            self._text_head = self._delta({"type": "text_delta", "text": ""}).rsplit('""', 1)[0]
        return events + [self._text_head + json.dumps(piece) + "}}\n\n"]

    def thinking(self, piece: str) -> list[str]:
        events = []
        if self.open != ("thinking", 0):
            events = self._start(("thinking", 0), {"type": "thinking", "thinking": "", "signature": ""})
        return events + [self._delta({"type": "thinking_delta", "thinking": piece})]

    def tool(self, d: runtime_pb2.ToolCallDelta) -> list[str]:
        events: list[str] = []
        if self.open != ("tool", d.index):
            if d.index in self.calls_seen:  # the contract streams one call's pieces together
                raise WorkerFailed("the runtime interleaved the pieces of its tool calls")
            self.calls_seen.add(d.index)
            events = self._start(("tool", d.index), {"type": "tool_use", "id": tool_id(d.id), "name": d.name,
                                                     "input": {}})
        if d.arguments:
            events.append(self._delta({"type": "input_json_delta", "partial_json": d.arguments}))
        return events

    def close(self) -> list[str]:
        if self.open is None:
            return []
        # A thinking block ends with its signature, as Anthropic's do (empty: nothing signs it here).
        signed = [self._delta({"type": "signature_delta", "signature": ""})] if self.open[0] == "thinking" else []
        self.open = None
        return signed + [_event("content_block_stop", {"type": "content_block_stop", "index": self.index})]
