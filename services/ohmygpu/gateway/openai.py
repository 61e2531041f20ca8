"""The OpenAI API: translation between OpenAI JSON and the contract's messages, nothing more."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeVar

from ohmygpu.core.errors import InvalidArgument, ModelNotFound, OmgError
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.gateway import fanout
from ohmygpu.gateway.body import Fields, FieldTable, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.sampling import OPENAI, parse_sampling
from ohmygpu.gateway.streaming import FINISH_NAMES, Answer, ClosingStreamingResponse
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_ROLES = {"system", "user", "assistant", "tool", "developer"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


R = TypeVar("R", runtime_pb2.ChatRequest, runtime_pb2.CompleteRequest)
# Sampling extensions llama.cpp's server and LM Studio take at the top level (clients send them).
_EXTENSIONS = frozenset({"top_k", "min_p", "repeat_penalty"})
_IDENTIFIERS = frozenset({"user", "safety_identifier", "prompt_cache_key", "metadata"})
# What OpenAI defines and no local runtime here does, with why; everything else OpenAI defines is
# honoured. `prompt_cache_key` is honoured by construction: prompt prefixes are reused anyway.
_REFUSED = {
    "audio": "this daemon does not generate audio in chat; use /v1/audio/speech",
    "prediction": "predicted outputs are not implemented",
    "web_search_options": "there is no web search here",
    "logit_bias": "logit_bias is not implemented",
    "functions": "the deprecated functions API is not implemented; pass 'tools'",
    "function_call": "the deprecated functions API is not implemented; pass 'tool_choice'",
    "verbosity": "verbosity is not implemented",
    "best_of": "best_of is not implemented; use n",
    "echo": "echo is not implemented",
}
CHAT_FIELDS = FieldTable("chat completions", frozenset({
    "model", "messages", "frequency_penalty", "presence_penalty", "temperature", "top_p", "seed",
    "max_tokens", "max_completion_tokens", "stop", "stream", "stream_options", "n", "logprobs",
    "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls",
    "reasoning_effort", "modalities", "store", "service_tier", *_IDENTIFIERS, *_EXTENSIONS}), _REFUSED)
COMPLETION_FIELDS = FieldTable("completions", frozenset({
    "model", "prompt", "suffix", "frequency_penalty", "presence_penalty", "temperature", "top_p",
    "seed", "max_tokens", "stop", "stream", "stream_options", "n", "logprobs", "response_format",
    *_IDENTIFIERS, *_EXTENSIONS}), _REFUSED)
# reasoning_effort in terms of the one switch llama.cpp templates have (Qwen3's enable_thinking).
_EFFORT = {"none": False, "minimal": False, "low": True, "medium": True, "high": True}


def sampling_params(f: Fields, limit: int, *, default_max_tokens: int | None = None) -> run_spec_pb2.SamplingParams:
    return parse_sampling(f, OPENAI, max_tokens_limit=limit, default_max_tokens=default_max_tokens)


def check_accepted(f: Fields) -> None:
    """The fields every OpenAI generation request may carry that change nothing here, checked
    for their type (a wrong one is a 400) and for values that would ask for something else."""
    for key in ("user", "safety_identifier", "prompt_cache_key"):
        f.str(key)
    f.obj("metadata")
    if f.bool("store", False):
        raise InvalidArgument("'store': true is not supported: chat completions are not stored here "
                              "(the Responses API stores responses)", param="store")
    tier = f.str("service_tier", default="auto")
    if tier not in ("auto", "default"):
        raise InvalidArgument(f"'service_tier' {tier!r} is not supported; one tier: 'auto'", param="service_tier")
    modalities = f.list("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidArgument("'modalities' must be [\"text\"]: only text is generated here", param="modalities")


def for_choice(request: R, choice: int) -> R:
    """Choice `choice`'s request: a seeded request's choices differ (seed + index) and each
    stays reproducible; choice 0 is the request itself, what n=1 gives."""
    if choice == 0 or not request.params.HasField("seed"):  # type: ignore[attr-defined]
        return request
    out = type(request)()
    out.CopyFrom(request)
    out.params.seed += choice  # type: ignore[attr-defined]
    return out


def think_for(effort: str, param: str) -> bool:
    """A `reasoning_effort` (or the Responses API's `reasoning.effort`) as the one switch
    llama.cpp templates have; raises InvalidArgument naming `param`."""
    if effort not in _EFFORT:
        raise InvalidArgument(f"'{param}' must be one of {sorted(_EFFORT)}", param=param)
    return _EFFORT[effort]


def logprobs_json(entries: Iterable[runtime_pb2.TokenLogprob]) -> list[dict[str, Any]]:
    """OpenAI's chat `logprobs.content` items."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": list(e.bytes),
             "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)}
                              for t in e.top_logprobs]} for e in entries]


def legacy_logprobs(entries: list[runtime_pb2.TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions API's older shape: parallel lists, text offsets from `offset`."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.token: t.logprob for t in e.top_logprobs} for e in entries],
            "text_offset": offsets}


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


# A message's fields. reasoning_content (DeepSeek's and llama-server's name for a reasoning
# model's thoughts) comes back in histories; templates drop past thinking, and so does this.
MESSAGE_FIELDS = FieldTable("chat message", frozenset({
    "role", "content", "name", "tool_calls", "tool_call_id", "refusal", "reasoning_content"}), {
    "audio": "audio in chat is not implemented", "function_call": "the deprecated functions API is "
    "not implemented; pass 'tool_calls'"})


def chat_messages(raw: list[Any] | None, table: FieldTable | None = None) -> list[runtime_pb2.ChatMessage]:
    """The messages translated; none is the daemon API's to refuse (its one empty-messages rule).
    Each message's fields are checked against `table` (OpenAI's by default; Ollama checks its
    own, gateway/ollama_fields.py, and passes None)."""
    out = []
    for i, m in enumerate(raw or []):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidArgument(f"'{where}' must be an object", param=where)
        if table is not None:
            table.check(m, where + ".")
        f = Fields(m, where + ".")
        if f.str("refusal"):
            raise InvalidArgument(f"'{where}.refusal' is not supported: pass the text as content",
                                  param=where + ".refusal")
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
        CHAT_FIELDS.check(body)
        f = Fields(body)
        tools, choice = tools_of(f)
        req = runtime_pb2.ChatRequest(
            model=f.str("model", required=True), messages=chat_messages(f.list("messages"), MESSAGE_FIELDS),
            params=sampling_params(f, self.gw.settings.max_tokens_limit),
            response_format=response_format(f), tools=tools, tool_choice=choice,
            logprobs=f.bool("logprobs", False), top_logprobs=f.int("top_logprobs", 0, 20) or 0)
        if "parallel_tool_calls" in body:
            req.parallel_tool_calls = f.bool("parallel_tool_calls", True)
        effort = f.str("reasoning_effort")
        if effort:
            req.think = think_for(effort, "reasoning_effort")
        check_accepted(f)
        n = f.int("n", 1, fanout.MAX_CHOICES) or 1
        stream = f.bool("stream", False)
        include_usage = bool((f.obj("stream_options") or {}).get("include_usage")) if stream else False

        streams = await fanout.start(lambda i: self.gw.api.chat(for_choice(req, i)), n)
        cid = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        if stream:
            return ClosingStreamingResponse(self._chat_sse(fanout.merged(streams), cid, created, req.model, include_usage),
                                            media_type="text/event-stream", headers=_SSE_HEADERS)
        answers = [_Answer() for _ in range(n)]
        async for i, m in fanout.merged(streams):
            answers[i].add(m)
        return JSONResponse({
            "id": cid, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [a.choice(i, req.logprobs) for i, a in enumerate(answers)],
            "usage": _usage_of([a.final.usage for a in answers]),
        })

    async def _chat_sse(self, messages: AsyncIterator[tuple[int, runtime_pb2.ChatResponse]], cid: str,
                        created: int, model: str, include_usage: bool) -> AsyncIterator[str]:
        # The envelope is formatted once; per token only the delta is JSON-encoded.
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        head = "data: " + json.dumps(base)[:-1] + ', "choices": [{"index": '
        tail = ', "logprobs": null, "finish_reason": null}]}\n\n'
        started: set[int] = set()
        usages: list[runtime_pb2.Usage] = []
        try:
            async for i, m in messages:
                lead = head + str(i) + ', "delta": '
                if i not in started:
                    started.add(i)
                    yield lead + '{"role": "assistant", "content": ""}' + tail
                if m.reasoning:
                    yield lead + '{"reasoning_content": ' + json.dumps(m.reasoning) + "}" + tail
                if m.content or m.logprobs:
                    delta = '{"content": ' + json.dumps(m.content) + "}"
                    if m.logprobs:
                        yield lead + delta + ', "logprobs": ' + json.dumps(
                            {"content": logprobs_json(m.logprobs), "refusal": None}) + ', "finish_reason": null}]}\n\n'
                    else:
                        yield lead + delta + tail
                if m.tool_calls:
                    deltas = []
                    for d in m.tool_calls:
                        fn: dict[str, str] = {"arguments": d.arguments}
                        delta_call: dict[str, Any] = {"index": d.index, "function": fn}
                        if d.id:
                            delta_call.update(id=d.id, type="function")
                            fn["name"] = d.name
                        deltas.append(delta_call)
                    yield lead + json.dumps({"tool_calls": deltas}) + tail
                if m.finish_reason:
                    reason = json.dumps(FINISH_NAMES[m.finish_reason])
                    yield lead + '{}, "logprobs": null, "finish_reason": ' + reason + "}]}\n\n"
                    usages.append(m.usage)
            if include_usage:
                yield "data: " + json.dumps({**base, "choices": [], "usage": _usage_of(usages)}) + "\n\n"
        except OmgError as e:
            yield "data: " + stream_error_line(e, "openai") + "\n\n"
            return
        yield "data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        COMPLETION_FIELDS.check(body)
        f = Fields(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise InvalidArgument("'prompt' must be a string", param="prompt")
        if f.str("suffix"):  # the llama.cpp worker has no fill-in-the-middle: never dropped silently
            raise InvalidArgument("'suffix' (fill-in-the-middle) is not supported yet", param="suffix")
        top = f.int("logprobs", 0, 5)  # the completions API's logprobs: alternatives per token
        req = runtime_pb2.CompleteRequest(
            model=f.str("model", required=True), prompt=prompt,
            params=sampling_params(f, self.gw.settings.max_tokens_limit, default_max_tokens=16),
            response_format=response_format(f), logprobs=top is not None, top_logprobs=top or 0)
        check_accepted(f)
        n = f.int("n", 1, fanout.MAX_CHOICES) or 1
        stream = f.bool("stream", False)
        include_usage = bool((f.obj("stream_options") or {}).get("include_usage")) if stream else False

        streams = await fanout.start(lambda i: self.gw.api.complete(for_choice(req, i)), n)
        cid = "cmpl-" + uuid.uuid4().hex
        created = int(time.time())
        envelope = {"id": cid, "object": "text_completion", "created": created, "model": req.model}
        if stream:
            return ClosingStreamingResponse(self._completion_sse(fanout.merged(streams), envelope, include_usage),
                                            media_type="text/event-stream", headers=_SSE_HEADERS)
        texts: list[list[str]] = [[] for _ in range(n)]
        lps: list[list[runtime_pb2.TokenLogprob]] = [[] for _ in range(n)]
        finals = [runtime_pb2.CompleteResponse() for _ in range(n)]
        async for i, m in fanout.merged(streams):
            texts[i].append(m.text)
            lps[i].extend(m.logprobs)
            if m.finish_reason:
                finals[i] = m
        return JSONResponse({**envelope, "choices": [{
            "text": "".join(texts[i]), "index": i,
            "logprobs": legacy_logprobs(lps[i], 0) if req.logprobs else None,
            "finish_reason": FINISH_NAMES[finals[i].finish_reason]} for i in range(n)],
            "usage": _usage_of([fm.usage for fm in finals])})

    async def _completion_sse(self, messages: AsyncIterator[tuple[int, runtime_pb2.CompleteResponse]],
                              envelope: dict[str, Any], include_usage: bool) -> AsyncIterator[str]:
        usages: list[runtime_pb2.Usage] = []
        offsets: dict[int, int] = {}
        try:
            async for i, m in messages:
                finish = FINISH_NAMES[m.finish_reason] if m.finish_reason else None
                if m.text or finish or m.logprobs:
                    lp = None
                    if m.logprobs:
                        lp = legacy_logprobs(list(m.logprobs), offsets.get(i, 0))
                    offsets[i] = offsets.get(i, 0) + len(m.text)
                    chunk = {**envelope, "choices": [{"text": m.text, "index": i, "logprobs": lp,
                                                      "finish_reason": finish}]}
                    yield "data: " + json.dumps(chunk) + "\n\n"
                if finish:
                    usages.append(m.usage)
            if include_usage:
                yield "data: " + json.dumps({**envelope, "choices": [], "usage": _usage_of(usages)}) + "\n\n"
        except OmgError as e:
            yield "data: " + stream_error_line(e, "openai") + "\n\n"
            return
        yield "data: [DONE]\n\n"


class _Answer(Answer):
    """One choice of a non-streamed chat answer."""

    def choice(self, index: int, logprobs: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant",
                                   "content": self.text if self.content or not self.calls else None}
        if self.reasoning:
            message["reasoning_content"] = self.thought
        if self.calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.calls.whole()]
        return {"index": index, "message": message,
                "logprobs": {"content": logprobs_json(self.logprobs), "refusal": None} if logprobs else None,
                "finish_reason": FINISH_NAMES[self.final.finish_reason]}


def _usage_of(usages: list[runtime_pb2.Usage]) -> dict[str, Any]:
    """Usage of a request's choices together: the prompt once (as OpenAI counts n > 1), the
    completions summed."""
    total = runtime_pb2.Usage()
    if usages:
        total.prompt_tokens, total.cached_tokens = usages[0].prompt_tokens, usages[0].cached_tokens
    total.completion_tokens = sum(u.completion_tokens for u in usages)
    return _usage(total)


__all__ = ["OpenAIRoutes", "ModelNotFound"]
