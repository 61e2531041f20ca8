"""The OpenAI API: translation between OpenAI JSON and the contract's messages, nothing more."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ohmygpu.core.errors import InvalidArgument, ModelNotFound, OmgError
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.gateway.body import Fields, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.sampling import OPENAI, parse_sampling
from ohmygpu.gateway.streaming import FINISH_NAMES, ToolCalls, primed
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_ROLES = {"system", "user", "assistant", "tool", "developer"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sampling_params(f: Fields, limit: int, *, default_max_tokens: int | None = None) -> run_spec_pb2.SamplingParams:
    p = parse_sampling(f, OPENAI, max_tokens_limit=limit, default_max_tokens=default_max_tokens)
    f.int("n", 1, 1)  # one choice per request; several would need several generations
    return p


def _content_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidArgument(f"'{where}' supports only text parts", param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidArgument(f"'{where}' must be a string or an array of text parts", param=where)


def chat_messages(raw: list[Any] | None) -> list[runtime_pb2.ChatMessage]:
    """The messages translated; none is the daemon API's to refuse (its one empty-messages rule)."""
    out = []
    for i, m in enumerate(raw or []):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidArgument(f"'{where}' must be an object", param=where)
        f = Fields(m, where + ".")
        role = f.str("role", required=True)
        if role not in _ROLES:
            raise InvalidArgument(f"'{where}.role' must be one of {sorted(_ROLES)}", param=where + ".role")
        msg = runtime_pb2.ChatMessage(
            role="system" if role == "developer" else role,
            content=_content_text(m.get("content"), where + ".content"),
            name=f.str("name"), tool_call_id=f.str("tool_call_id"))
        for j, call in enumerate(f.list("tool_calls") or []):
            cf = Fields(call if isinstance(call, dict) else {}, f"{where}.tool_calls[{j}].")
            fn = Fields(cf.obj("function") or {}, f"{where}.tool_calls[{j}].function.")
            args = fn.data.get("arguments", "")
            msg.tool_calls.add(id=cf.str("id"), name=fn.str("name", required=True),
                               arguments=args if isinstance(args, str) else json.dumps(args))
        out.append(msg)
    return out


def tools_of(f: Fields) -> tuple[list[runtime_pb2.Tool], runtime_pb2.ToolChoice]:
    tools = []
    for i, t in enumerate(f.list("tools") or []):
        tf = Fields(t if isinstance(t, dict) else {}, f"tools[{i}].")
        if tf.str("type", default="function") != "function":
            raise InvalidArgument(f"'tools[{i}].type' must be 'function'", param="tools")
        fn = Fields(tf.obj("function") or {}, f"tools[{i}].function.")
        params = fn.obj("parameters")
        tools.append(runtime_pb2.Tool(name=fn.str("name", required=True), description=fn.str("description"),
                                      parameters_json=json.dumps(params) if params else ""))
    choice = runtime_pb2.ToolChoice()
    raw = f.data.get("tool_choice")
    modes = {"auto": runtime_pb2.TOOL_CHOICE_MODE_AUTO, "none": runtime_pb2.TOOL_CHOICE_MODE_NONE,
             "required": runtime_pb2.TOOL_CHOICE_MODE_REQUIRED}
    if isinstance(raw, str) and raw in modes:
        choice.mode = modes[raw]
    elif isinstance(raw, dict):
        name = Fields(Fields(raw, "tool_choice.").obj("function") or {}, "tool_choice.function.").str(
            "name", required=True)
        choice.mode, choice.function_name = runtime_pb2.TOOL_CHOICE_MODE_FUNCTION, name
    elif raw is not None:
        raise InvalidArgument("'tool_choice' must be 'auto', 'none', 'required' or a function",
                              param="tool_choice")
    if choice.mode in (runtime_pb2.TOOL_CHOICE_MODE_REQUIRED, runtime_pb2.TOOL_CHOICE_MODE_FUNCTION):
        for t in tools:  # these become a grammar: checked before any queue (auto only describes them)
            if t.parameters_json:
                check_schema(json.loads(t.parameters_json), param="tools")
    return tools, choice


def response_format(f: Fields) -> runtime_pb2.ResponseFormat:
    rf = f.obj("response_format")
    if rf is None:
        return runtime_pb2.ResponseFormat()
    rff = Fields(rf, "response_format.")
    kind = rff.str("type", required=True)
    if kind == "text":
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_TEXT)
    if kind == "json_object":
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    if kind == "json_schema":
        js = Fields(rff.obj("json_schema") or {}, "response_format.json_schema.")
        schema = js.obj("schema")
        if schema is None:
            raise InvalidArgument("'response_format.json_schema.schema' is required", param="response_format")
        # Checked here too, so a schema no grammar can hold is a 400 before any queue or worker.
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                                          schema_json=json.dumps(check_schema(schema, param="response_format")))
    raise InvalidArgument("'response_format.type' must be text, json_object or json_schema",
                          param="response_format")


def _usage(u: runtime_pb2.Usage) -> dict[str, Any]:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            # OpenAI's name for prompt tokens served from a cache (here: the KV cache kept on the
            # sequence that ran the conversation's previous turn).
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


class OpenAIRoutes:
    """Handlers for /v1/chat/completions, /v1/completions, /v1/models."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
        ]

    @staticmethod
    def _model_json(record: Any) -> dict[str, Any]:
        return {"id": record.name, "object": "model", "created": record.created_at.seconds,
                "owned_by": "ohmygpu"}

    async def list_models(self, request: Request) -> Response:
        records = await self.gw.api.list_records()
        return JSONResponse({"object": "list", "data": [self._model_json(r) for r in records]})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(self._model_json(await self.gw.api.get_record(request.path_params["model"])))

    async def chat_completions(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        f = Fields(body)
        tools, choice = tools_of(f)
        req = runtime_pb2.ChatRequest(
            model=f.str("model", required=True), messages=chat_messages(f.list("messages")),
            params=sampling_params(f, self.gw.settings.max_tokens_limit),
            response_format=response_format(f), tools=tools, tool_choice=choice)
        stream = f.bool("stream", False)
        include_usage = bool((f.obj("stream_options") or {}).get("include_usage")) if stream else False
        messages = await primed(self.gw.api.chat(req))
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if stream:
            return StreamingResponse(self._chat_sse(messages, cid, created, req.model, include_usage),
                                     media_type="text/event-stream", headers=_SSE_HEADERS)
        content: list[str] = []
        calls = ToolCalls()
        final = runtime_pb2.ChatResponse()
        async for m in messages:
            if m.content:
                content.append(m.content)
            calls.add(m.tool_calls)
            if m.finish_reason:
                final = m
        message: dict[str, Any] = {"role": "assistant", "content": "".join(content) if content or not calls else None}
        if calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in calls.whole()]
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": FINISH_NAMES[final.finish_reason]}],
            "usage": _usage(final.usage),
        })

    async def _chat_sse(self, messages: AsyncIterator[runtime_pb2.ChatResponse], cid: str, created: int,
                        model: str, include_usage: bool) -> AsyncIterator[str]:
        # The envelope is formatted once; per token only the delta is JSON-encoded.
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        head = "data: " + json.dumps(base)[:-1] + ', "choices": [{"index": 0, "delta": '
        tail = ', "logprobs": null, "finish_reason": null}]}\n\n'
        yield head + '{"role": "assistant", "content": ""}' + tail
        try:
            async for m in messages:
                if m.content:
                    yield head + '{"content": ' + json.dumps(m.content) + "}" + tail
                if m.tool_calls:
                    deltas = []
                    for d in m.tool_calls:
                        fn: dict[str, str] = {"arguments": d.arguments}
                        delta: dict[str, Any] = {"index": d.index, "function": fn}
                        if d.id:
                            delta.update(id=d.id, type="function")
                            fn["name"] = d.name
                        deltas.append(delta)
                    yield head + json.dumps({"tool_calls": deltas}) + tail
                if m.finish_reason:
                    reason = json.dumps(FINISH_NAMES[m.finish_reason])
                    yield head + '{}, "logprobs": null, "finish_reason": ' + reason + "}]}\n\n"
                    if include_usage:
                        yield "data: " + json.dumps({**base, "choices": [], "usage": _usage(m.usage)}) + "\n\n"
        except OmgError as e:
            yield "data: " + stream_error_line(e, "openai") + "\n\n"
            return
        yield "data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        f = Fields(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidArgument("'prompt' must be a string", param="prompt")
        req = runtime_pb2.CompleteRequest(
            model=f.str("model", required=True), prompt=prompt, suffix=f.str("suffix"),
            params=sampling_params(f, self.gw.settings.max_tokens_limit, default_max_tokens=16),
            response_format=response_format(f))
        stream = f.bool("stream", False)
        include_usage = bool((f.obj("stream_options") or {}).get("include_usage")) if stream else False
        messages = await primed(self.gw.api.complete(req))
        cid = "cmpl-" + uuid.uuid4().hex
        created = int(time.time())
        envelope = {"id": cid, "object": "text_completion", "created": created, "model": req.model}
        if stream:
            return StreamingResponse(self._completion_sse(messages, envelope, include_usage),
                                     media_type="text/event-stream", headers=_SSE_HEADERS)
        text: list[str] = []
        final = runtime_pb2.CompleteResponse()
        async for m in messages:
            text.append(m.text)
            if m.finish_reason:
                final = m
        return JSONResponse({**envelope, "choices": [{
            "text": "".join(text), "index": 0, "logprobs": None,
            "finish_reason": FINISH_NAMES[final.finish_reason]}], "usage": _usage(final.usage)})

    async def _completion_sse(self, messages: AsyncIterator[runtime_pb2.CompleteResponse],
                              envelope: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
        try:
            async for m in messages:
                finish = FINISH_NAMES[m.finish_reason] if m.finish_reason else None
                if m.text or finish:
                    chunk = {**envelope, "choices": [{"text": m.text, "index": 0, "logprobs": None,
                                                      "finish_reason": finish}]}
                    yield "data: " + json.dumps(chunk) + "\n\n"
                if finish and include_usage:
                    yield "data: " + json.dumps({**envelope, "choices": [], "usage": _usage(m.usage)}) + "\n\n"
        except OmgError as e:
            yield "data: " + stream_error_line(e, "openai") + "\n\n"
            return
        yield "data: [DONE]\n\n"


__all__ = ["OpenAIRoutes", "ModelNotFound"]
