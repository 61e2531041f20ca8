"""OpenAI's Responses API: /v1/responses, translated into the daemon API's ChatRequest.

A request's `input` (a string, or items: messages, function calls and their outputs) becomes
contract messages after the conversation of `previous_response_id`, if any, which the daemon
keeps (daemon/responses.py). `instructions` are this request's system message only (OpenAI does
not carry them over to the next response). The answer's output items are a reasoning item (for
reasoning models), a message with output_text, and function calls; streamed, they come as the
Responses event sequence (response.created ... response.completed), each with its
sequence_number. Fields the API defines that nothing here can do are refused by name.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ohmygpu.core.errors import InvalidArgument, OmgError
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.daemon.api import StoredResponse
from ohmygpu.gateway.body import Fields, FieldTable, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import error_body
from ohmygpu.gateway.openai import check_accepted, logprobs_json, think_for
from ohmygpu.gateway.sampling import Dialect, Name, parse_sampling
from ohmygpu.gateway.streaming import Answer, ClosingStreamingResponse, primed
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

RESPONSES = Dialect((Name("temperature", "temperature"), Name("top_p", "top_p"),
                     Name("max_output_tokens", "max_tokens"), Name("top_k", "top_k"), Name("min_p", "min_p"),
                     Name("seed", "seed")))
FIELDS = FieldTable("responses", frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "text", "temperature", "top_p",
    "max_output_tokens", "stream", "store", "previous_response_id", "metadata", "user",
    "safety_identifier", "prompt_cache_key", "parallel_tool_calls", "top_logprobs", "include",
    "reasoning", "truncation", "service_tier", "top_k", "min_p", "seed", "stream_options"}), {
    "background": "background responses are not implemented; stream instead",
    "conversation": "conversation objects are not implemented; pass previous_response_id",
    "prompt": "stored prompt templates are not implemented",
    "max_tool_calls": "max_tool_calls is not implemented",
})
_INCLUDES = {"message.output_text.logprobs"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidArgument(f"'{where}' must be a string or an array of content parts", param=where)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
        else:
            raise InvalidArgument(f"'{where}[{j}]' of type {str(kind)[:40]!r} is not supported: only text "
                                  "parts (no images, files or audio here)", param=f"{where}[{j}]")
    return "".join(parts)


def input_messages(raw: Any) -> list[runtime_pb2.ChatMessage]:
    """`input` (a string or items) as contract messages; function calls join the assistant
    message before them, as chat templates expect."""
    if isinstance(raw, str):
        return [runtime_pb2.ChatMessage(role="user", content=raw)]
    if not isinstance(raw, list):
        raise InvalidArgument("'input' must be a string or an array of items", param="input")
    out: list[runtime_pb2.ChatMessage] = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"'{where}' must be an object", param=where)
        f = Fields(item, where + ".")
        kind = f.str("type", default="message")
        if kind == "message":
            role = f.str("role", required=True)
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidArgument(f"'{where}.role' must be user, assistant, system or developer",
                                      param=where + ".role")
            out.append(runtime_pb2.ChatMessage(role="system" if role == "developer" else role,
                                               content=_text_of(item.get("content"), where + ".content")))
        elif kind == "function_call":
            call = runtime_pb2.ToolCall(id=f.str("call_id", required=True), name=f.str("name", required=True),
                                        arguments=f.str("arguments", default="{}"))
            if out and out[-1].role == "assistant" and not out[-1].tool_call_id:
                out[-1].tool_calls.append(call)
            else:
                out.append(runtime_pb2.ChatMessage(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, where + ".output")
            out.append(runtime_pb2.ChatMessage(role="tool", content=text, tool_call_id=f.str("call_id", required=True)))
        elif kind == "reasoning":
            continue  # past thinking: chat templates drop it from the prompt
        else:
            raise InvalidArgument(f"'{where}.type' {kind[:40]!r} is not supported: message, function_call, "
                                  "function_call_output or reasoning items", param=where + ".type")
    return out


def _tools(f: Fields) -> tuple[list[runtime_pb2.Tool], runtime_pb2.ToolChoice]:
    tools = []
    for i, t in enumerate(f.list("tools") or []):
        tf = Fields(t if isinstance(t, dict) else {}, f"tools[{i}].")
        kind = tf.str("type", required=True)
        if kind != "function":
            raise InvalidArgument(f"'tools[{i}].type' {kind[:40]!r} is not supported: only function tools "
                                  "(no hosted tools: web search, file search, computer use run at OpenAI)",
                                  param=f"tools[{i}].type")
        params = tf.obj("parameters")
        tf.bool("strict", True)  # forced calls follow the schema by grammar whatever strict says
        tools.append(runtime_pb2.Tool(name=tf.str("name", required=True), description=tf.str("description"),
                                      parameters_json=json.dumps(params) if params else ""))
    choice = runtime_pb2.ToolChoice()
    raw = f.data.get("tool_choice")
    modes = {"auto": runtime_pb2.TOOL_CHOICE_MODE_AUTO, "none": runtime_pb2.TOOL_CHOICE_MODE_NONE,
             "required": runtime_pb2.TOOL_CHOICE_MODE_REQUIRED}
    if isinstance(raw, str) and raw in modes:
        choice.mode = modes[raw]
    elif isinstance(raw, dict) and raw.get("type") == "function":
        choice.mode = runtime_pb2.TOOL_CHOICE_MODE_FUNCTION
        choice.function_name = Fields(raw, "tool_choice.").str("name", required=True)
    elif raw is not None:
        raise InvalidArgument("'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                              "\"name\": ...}", param="tool_choice")
    return tools, choice


def _format(f: Fields) -> runtime_pb2.ResponseFormat:
    text = Fields(f.obj("text") or {}, "text.")
    for key in text.data:
        if key not in ("format", "verbosity"):
            raise InvalidArgument(f"'text.{key}' is not a field of text", param=f"text.{key}")
    if text.data.get("verbosity") not in (None, "medium"):
        raise InvalidArgument("'text.verbosity' is not supported", param="text.verbosity")
    fmt = text.obj("format")
    if fmt is None:
        return runtime_pb2.ResponseFormat()
    ff = Fields(fmt, "text.format.")
    kind = ff.str("type", required=True)
    if kind == "text":
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_TEXT)
    if kind == "json_object":
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    if kind == "json_schema":
        schema = ff.obj("schema")
        if schema is None:
            raise InvalidArgument("'text.format.schema' is required", param="text.format.schema")
        ff.str("name")
        ff.bool("strict", False)
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                                          schema_json=json.dumps(check_schema(schema, param="text.format")))
    raise InvalidArgument("'text.format.type' must be text, json_object or json_schema", param="text.format.type")


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class _Output(Answer):
    """A response's output items as they are built from the chat stream."""

    def __init__(self, want_logprobs: bool) -> None:
        super().__init__()
        self.reasoning_id, self.message_id = _new_id("rs"), _new_id("msg")
        self.call_ids: dict[int, str] = {}
        self.want_logprobs = want_logprobs

    def add(self, m: runtime_pb2.ChatResponse) -> None:
        super().add(m)
        for d in m.tool_calls:
            self.call_ids.setdefault(d.index, _new_id("fc"))

    def reasoning_item(self) -> dict[str, Any]:
        return {"type": "reasoning", "id": self.reasoning_id, "summary": [], "status": "completed",
                "content": [{"type": "reasoning_text", "text": self.thought}]}

    def text_part(self) -> dict[str, Any]:
        return {"type": "output_text", "text": self.text, "annotations": [],
                "logprobs": logprobs_json(self.logprobs) if self.want_logprobs else []}

    def message_item(self, status: str = "completed") -> dict[str, Any]:
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant",
                "content": [self.text_part()]}

    def call_item(self, call: runtime_pb2.ToolCallDelta, status: str = "completed") -> dict[str, Any]:
        return {"type": "function_call", "id": self.call_ids[call.index], "call_id": call.id,
                "name": call.name, "arguments": call.arguments, "status": status}

    def items(self) -> list[dict[str, Any]]:
        out = [self.reasoning_item()] if self.reasoning else []
        if self.content or not self.calls:
            out.append(self.message_item())
        out += [self.call_item(c) for c in self.calls.whole()]
        return out

    def as_message(self) -> runtime_pb2.ChatMessage:
        """The answer as the conversation's next message (what a next turn continues from)."""
        return runtime_pb2.ChatMessage(role="assistant", content=self.text, tool_calls=[
            runtime_pb2.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in self.calls.whole()])


class ResponsesRoutes:
    """Handlers for /v1/responses."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.get, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
            Route("/v1/responses/{response_id}/input_items", self.input_items, methods=["GET"]),
        ]

    async def get(self, request: Request) -> Response:
        stored = await asyncio.to_thread(self.gw.api.responses.get, request.path_params["response_id"])
        return JSONResponse(stored.body)

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        await asyncio.to_thread(self.gw.api.responses.delete, response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        stored = await asyncio.to_thread(self.gw.api.responses.get, request.path_params["response_id"])
        items = stored.input_items
        return JSONResponse({"object": "list", "data": items, "has_more": False,
                             "first_id": items[0].get("id") if items else None,
                             "last_id": items[-1].get("id") if items else None})

    async def create(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        FIELDS.check(body)
        f = Fields(body)
        model = f.str("model", required=True)
        history: list[runtime_pb2.ChatMessage] = []
        previous = f.str("previous_response_id")
        if previous:
            history = list((await asyncio.to_thread(self.gw.api.responses.get, previous)).conversation)
        turn = input_messages(body.get("input"))
        if not turn:
            raise InvalidArgument("'input' must not be empty", param="input")
        messages = ([runtime_pb2.ChatMessage(role="system", content=f.str("instructions"))]
                    if f.str("instructions") else []) + history + turn
        tools, choice = _tools(f)
        include = f.list("include") or []
        for j, name in enumerate(include):
            if name not in _INCLUDES:
                raise InvalidArgument(f"'include[{j}]' {str(name)[:60]!r} is not supported; only "
                                      f"{sorted(_INCLUDES)}", param=f"include[{j}]")
        top = f.int("top_logprobs", 0, 20)
        req = runtime_pb2.ChatRequest(
            model=model, messages=messages, tools=tools, tool_choice=choice, response_format=_format(f),
            params=parse_sampling(f, RESPONSES, max_tokens_limit=self.gw.settings.max_tokens_limit),
            logprobs=bool(include) or top is not None, top_logprobs=top or 0)
        truncation = f.str("truncation", default="disabled")
        if truncation not in ("disabled", "auto"):
            raise InvalidArgument("'truncation' must be 'disabled' or 'auto'", param="truncation")
        req.truncate = truncation == "auto"
        if "parallel_tool_calls" in body:
            req.parallel_tool_calls = f.bool("parallel_tool_calls", True)
        reasoning = Fields(f.obj("reasoning") or {}, "reasoning.")
        effort = reasoning.str("effort")
        if effort:
            req.think = think_for(effort, "reasoning.effort")
        for key in reasoning.data:
            if key not in ("effort", "summary", "generate_summary"):
                raise InvalidArgument(f"'reasoning.{key}' is not a field of reasoning", param=f"reasoning.{key}")
        store = f.bool("store", True)
        check_accepted(Fields({k: v for k, v in body.items() if k != "store"}))
        stream = f.bool("stream", False)
        response_id = _new_id("resp")
        envelope = self._envelope(response_id, body, f, store)
        chat = await primed(self.gw.api.chat(req))
        input_items = [item if isinstance(item, dict) else {} for item in body["input"]] if isinstance(
            body["input"], list) else [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": body["input"]}]}]
        saver = _Saver(self.gw, response_id, history + turn, input_items, store)
        output = _Output(want_logprobs=req.logprobs)
        if stream:
            return ClosingStreamingResponse(self._events(chat, envelope, output, saver),
                                            media_type="text/event-stream", headers=_SSE_HEADERS)
        async for m in chat:
            output.add(m)
        response = _finished(envelope, output)
        await saver.save(response, output)
        return JSONResponse(response)

    @staticmethod
    def _envelope(response_id: str, body: dict[str, Any], f: Fields, store: bool) -> dict[str, Any]:
        return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": "in_progress",
                "model": body["model"], "output": [], "error": None, "incomplete_details": None,
                "instructions": body.get("instructions"), "previous_response_id": body.get("previous_response_id"),
                "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice", "auto"),
                "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "temperature": body.get("temperature"), "top_p": body.get("top_p"),
                "max_output_tokens": body.get("max_output_tokens"), "store": store,
                "metadata": body.get("metadata") or {}, "text": body.get("text") or {"format": {"type": "text"}},
                "truncation": body.get("truncation", "disabled"), "usage": None,
                "reasoning": body.get("reasoning") or {"effort": None, "summary": None}}

    async def _events(self, chat: AsyncIterator[runtime_pb2.ChatResponse], envelope: dict[str, Any],
                      output: _Output, saver: _Saver) -> AsyncIterator[str]:
        seq = 0

        def event(kind: str, **data: Any) -> str:
            nonlocal seq
            seq += 1
            return f"event: {kind}\ndata: " + json.dumps({"type": kind, "sequence_number": seq - 1, **data}) + "\n\n"

        yield event("response.created", response=envelope)
        yield event("response.in_progress", response=envelope)
        index = 0  # output index of the item being streamed
        open_kind = ""  # "reasoning" | "message" while one streams
        opened_calls: dict[int, int] = {}  # call index -> output index

        def close_open() -> list[str]:
            nonlocal index, open_kind
            out = []
            if open_kind == "reasoning":
                out.append(event("response.reasoning_text.done", item_id=output.reasoning_id, output_index=index,
                                 content_index=0, text=output.thought))
                out.append(event("response.output_item.done", output_index=index, item=output.reasoning_item()))
            elif open_kind == "message":
                part = output.text_part()
                out.append(event("response.output_text.done", item_id=output.message_id, output_index=index,
                                 content_index=0, text=part["text"], logprobs=part["logprobs"]))
                out.append(event("response.content_part.done", item_id=output.message_id, output_index=index,
                                 content_index=0, part=part))
                out.append(event("response.output_item.done", output_index=index, item=output.message_item()))
            if open_kind:
                index += 1
            open_kind = ""
            return out

        try:
            async for m in chat:
                output.add(m)
                if m.reasoning:
                    if open_kind != "reasoning":
                        for e in close_open():
                            yield e
                        open_kind = "reasoning"
                        yield event("response.output_item.added", output_index=index,
                                    item={**output.reasoning_item(), "status": "in_progress", "content": []})
                    yield event("response.reasoning_text.delta", item_id=output.reasoning_id, output_index=index,
                                content_index=0, delta=m.reasoning)
                if m.content or m.logprobs:
                    if open_kind != "message":
                        for e in close_open():
                            yield e
                        open_kind = "message"
                        yield event("response.output_item.added", output_index=index,
                                    item={**output.message_item("in_progress"), "content": []})
                        yield event("response.content_part.added", item_id=output.message_id, output_index=index,
                                    content_index=0, part={"type": "output_text", "text": "", "annotations": [],
                                                           "logprobs": []})
                    yield event("response.output_text.delta", item_id=output.message_id, output_index=index,
                                content_index=0, delta=m.content,
                                logprobs=logprobs_json(m.logprobs) if output.want_logprobs else [])
                for d in m.tool_calls:
                    if d.index not in opened_calls:
                        for e in close_open():
                            yield e
                        opened_calls[d.index] = index
                        index += 1
                        call = next(c for c in output.calls.whole() if c.index == d.index)
                        yield event("response.output_item.added", output_index=opened_calls[d.index],
                                    item={**output.call_item(call, "in_progress"), "arguments": ""})
                    if d.arguments:
                        yield event("response.function_call_arguments.delta", item_id=output.call_ids[d.index],
                                    output_index=opened_calls[d.index], delta=d.arguments)
            for e in close_open():
                yield e
            for call in output.calls.whole():
                at = opened_calls[call.index]
                yield event("response.function_call_arguments.done", item_id=output.call_ids[call.index],
                            output_index=at, name=call.name, arguments=call.arguments)
                yield event("response.output_item.done", output_index=at, item=output.call_item(call))
            if not output.content and not output.calls and not output.reasoning:
                # Nothing generated: the (empty) message item still comes, as non-streamed.
                yield event("response.output_item.added", output_index=index,
                            item={**output.message_item("in_progress"), "content": []})
                yield event("response.output_item.done", output_index=index, item=output.message_item())
            response = _finished(envelope, output)
            await saver.save(response, output)
            kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
            yield event(kind, response=response)
        except OmgError as e:
            yield event("error", **error_body(e, "openai")["error"])  # type: ignore[arg-type]
            yield event("response.failed", response={**envelope, "status": "failed",
                                                     "error": {"code": "server_error", "message": e.message}})


class _Saver:
    """Stores a finished response when the request asked (store, the default)."""

    def __init__(self, gw: Gateway, response_id: str, conversation: list[runtime_pb2.ChatMessage],
                 input_items: list[dict[str, Any]], store: bool) -> None:
        self.gw, self.id, self.conversation, self.input_items, self.store = gw, response_id, conversation, input_items, store

    async def save(self, response: dict[str, Any], output: _Output) -> None:
        if not self.store:
            return
        stored = StoredResponse(self.id, response, [*self.conversation, output.as_message()], self.input_items)
        await asyncio.to_thread(self.gw.api.responses.put, stored)


def _finished(envelope: dict[str, Any], output: _Output) -> dict[str, Any]:
    u = output.final.usage
    length = output.final.finish_reason == runtime_pb2.FINISH_REASON_LENGTH
    return {**envelope, "status": "incomplete" if length else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if length else None,
            "output": output.items(),
            "usage": {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
                      "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": u.prompt_tokens + u.completion_tokens}}
