"""The Ollama API: translation between Ollama JSON and the contract's messages, nothing more."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

from ohmygpu.api.v1 import jobs_pb2, models_pb2, system_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.artifacts import model_digest
from ohmygpu.core.capabilities import capabilities, chat_template
from ohmygpu.core.durations import parse_keep_alive
from ohmygpu.core.errors import InvalidArgument, OmgError
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.core.version import __version__
from ohmygpu.gateway import ollama_fields as fields
from ohmygpu.gateway.body import Fields, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.ollama_create import OllamaModelRoutes, modelfile, parameters_text
from ohmygpu.gateway.openai import chat_messages, logprobs_json, tools_of
from ohmygpu.gateway.streaming import FINISH_NAMES, Answer, ClosingStreamingResponse, ToolCalls, primed
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


_FOREVER = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def keep_alive(value: Any) -> str:
    """Validate ollama's keep_alive (Go duration or seconds); returns it as text, "" if unset."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidArgument("invalid keep_alive: use a duration like 5m, 30s or -1", param="keep_alive")
    parse_keep_alive(value)
    return f"{value}s" if isinstance(value, (int, float)) else value.strip()


def tagged(name: str) -> str:
    """`name` as Ollama lists it: with its tag, `latest` when it has none (Open WebUI looks a
    chat's model up by that name in the list it read)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


async def ollama_name(gw: Gateway, name: str) -> str:
    """The model an Ollama request names. Ollama's names carry a tag, `latest` when none is
    given, and its clients add it: Open WebUI asks for "smollm2:latest" of a model listed as
    "smollm2". Such a name is the untagged model unless a model has the tagged name."""
    if not name.endswith(":latest"):
        return name
    for candidate in (name, name.removesuffix(":latest")):
        try:
            await gw.api.get_record(candidate)
            return candidate
        except OmgError:
            continue
    return name  # not found either way: the error names what was asked for


async def load_or_unload(gw: Gateway, model: str, keep_alive: str,
                         mode: int = run_spec_pb2.MODE_UNSPECIFIED) -> str:
    """Ollama's empty request (no messages, no prompt, no input), on every endpoint that has
    one: it loads `model` for `mode`, or with keep_alive 0 unloads it. Returns ollama's
    done_reason ("load" or "unload"); raises ModelNotFound, and PermissionDenied or
    FailedPrecondition as every unload does (daemon API `unload`)."""
    if keep_alive and parse_keep_alive(keep_alive) == 0:
        await gw.api.get_record(model)  # 404 for an unknown model, as ollama does
        await gw.api.unload(model)
        return "unload"
    await gw.api.load(model, mode, keep_alive)
    return "load"


def format_of(body: Fields) -> runtime_pb2.ResponseFormat:
    fmt = body.data.get("format")
    if fmt in (None, ""):
        return runtime_pb2.ResponseFormat()
    if fmt == "json":
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT)
    if isinstance(fmt, dict):  # checked here too, so a schema no grammar can hold is a 400 before any queue
        return runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                                          schema_json=json.dumps(check_schema(fmt, param="format")))
    raise InvalidArgument("'format' must be \"json\" or a JSON schema object", param="format")


def _details(record: assets_pb2.InstallRecord) -> dict[str, Any]:
    g = record.gguf
    params = g.parameter_count
    size = f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.2f}M" if params else ""
    return {"parent_model": record.derived.base,  # the model an /api/create made it from
            "format": "gguf" if record.format == assets_pb2.ARTIFACT_FORMAT_GGUF else "",
            "family": g.architecture, "families": [g.architecture] if g.architecture else None,
            "parameter_size": size, "quantization_level": g.quantization}


def _digest(record: assets_pb2.InstallRecord) -> str:
    return model_digest(record).removeprefix("sha256:")  # the main artifact's, as /api/ps shows


def _final_fields(m: Any, load_ns: int) -> dict[str, Any]:
    t, u, load_ns = m.timings, m.usage, load_ns or m.timings.load_ns  # the daemon's, when it loaded
    return {"done_reason": FINISH_NAMES[m.finish_reason] if m.finish_reason != runtime_pb2.FINISH_REASON_TOOL_CALLS else "stop",
            "total_duration": t.prompt_eval_ns + t.eval_ns + load_ns, "load_duration": load_ns,
            "prompt_eval_count": u.prompt_tokens, "prompt_eval_duration": t.prompt_eval_ns,
            "eval_count": u.completion_tokens, "eval_duration": t.eval_ns}


class OllamaRoutes:
    """Handlers for /api/*."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/api/chat", self.chat, methods=["POST"]),
            Route("/api/generate", self.generate, methods=["POST"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/version", self.version, methods=["GET"]),
            Route("/api/ps", self.ps, methods=["GET"]),
            Route("/api/pull", self.pull, methods=["POST"]),
            Route("/api/delete", self.delete, methods=["DELETE"]),
            Route("/api/copy", self.copy, methods=["POST"]),
            *OllamaModelRoutes(self.gw).routes(),  # create, blobs, push: gateway/ollama_create.py
        ]

    async def pull(self, request: Request) -> Response:
        """Ollama's pull, backed by a pull job; progress as ollama's status objects."""
        f = Fields(await read_json(request, self.gw.body_limit))
        fields.check(f, "pull")
        source = f.str("model") or f.str("name", required=True)
        stream = f.bool("stream", True)
        f.bool("insecure", False)  # must be a boolean; changes nothing (see ollama_fields)
        job = await self.gw.api.pull(source)
        watcher = self.gw.api.watch_job(job.id)
        if stream:
            return ClosingStreamingResponse(self._pull_ndjson(watcher), media_type="application/x-ndjson")
        final = job
        async for final in watcher:
            pass
        if final.state != jobs_pb2.JOB_STATE_DONE:
            return JSONResponse({"error": final.error or "pull failed"}, status_code=500)
        return JSONResponse({"status": "success"})

    @staticmethod
    async def _pull_ndjson(watcher: AsyncIterator[Any]) -> AsyncIterator[str]:
        yield json.dumps({"status": "pulling manifest"}) + "\n"
        async for job in watcher:
            for fp in job.files:
                digest = fp.sha256 or ("sha256:" + "0" * 64)
                yield json.dumps({"status": f"pulling {digest.removeprefix('sha256:')[:12]}", "digest": digest,
                                  "total": fp.total, "completed": fp.completed}) + "\n"
            if job.state == jobs_pb2.JOB_STATE_DONE:
                yield json.dumps({"status": "verifying sha256 digest"}) + "\n"
                yield json.dumps({"status": "writing manifest"}) + "\n"
                yield json.dumps({"status": "success"}) + "\n"
            elif job.state in (jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED):
                yield json.dumps({"error": job.error or "pull failed"}) + "\n"

    async def delete(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        name = await ollama_name(self.gw, f.str("model") or f.str("name", required=True))
        await self.gw.api.models.DeleteModel(models_pb2.DeleteModelRequest(name=name))
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        source, destination = f.str("source", required=True), f.str("destination", required=True)
        await self.gw.api.models.AliasModel(models_pb2.AliasModelRequest(source=source, destination=destination))
        return Response(status_code=200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": __version__})

    async def tags(self, request: Request) -> Response:
        # Only models the Ollama API can run: clients take every entry for a chat or
        # embedding model (Open WebUI's model picker; llm-ollama registers each one as an
        # embedding model), so a whisper model, served by /v1/audio/transcriptions, is left out.
        records = [r for r in await self.gw.api.list_records() if capabilities(r)]
        return JSONResponse({"models": [{
            "name": tagged(r.name), "model": tagged(r.name),
            "modified_at": r.created_at.ToDatetime(timezone.utc).isoformat(),
            "size": r.size_bytes, "digest": _digest(r), "details": _details(r)} for r in records]})

    async def show(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        fields.check(f, "show")
        name = await ollama_name(self.gw, f.str("model") or f.str("name", required=True))
        r = await self.gw.api.get_record(name)
        g = r.gguf
        info = {"general.architecture": g.architecture, "general.name": g.name,
                "general.parameter_count": g.parameter_count, "general.file_type": g.quantization}
        if g.architecture:
            info.update({f"{g.architecture}.context_length": g.context_length,
                         f"{g.architecture}.embedding_length": g.embedding_length,
                         f"{g.architecture}.block_count": g.block_count})
        d = r.derived  # a model made by /api/create: what it adds (empty otherwise)
        out = {
            "license": "\n".join(d.license), "modelfile": modelfile(r), "parameters": parameters_text(d),
            "template": chat_template(r), "system": d.system, "details": _details(r),
            "model_info": info, "capabilities": capabilities(r),
            "modified_at": r.created_at.ToDatetime(timezone.utc).isoformat(),
        }
        if d.messages:
            out["messages"] = [{"role": m.role, "content": m.content} for m in d.messages]
        return JSONResponse(out)

    async def ps(self, request: Request) -> Response:
        # One row per model: an LLM serving chat and embeddings has two workers, which Ollama
        # (one runner per model) shows as one: their memory summed, the later expiry.
        loaded = await self.gw.api.system.ListLoaded(system_pb2.ListLoadedRequest())
        rows: dict[str, dict[str, Any]] = {}
        for m in loaded.models:
            # ollama shows a model kept forever with a far-future expiry.
            expires = m.expires_at.ToDatetime(timezone.utc) if m.HasField("expires_at") else _FOREVER
            row = rows.get(m.name)
            if row is None:
                rows[m.name] = {"name": tagged(m.name), "model": tagged(m.name), "size": m.memory_bytes,
                                "digest": m.digest.removeprefix("sha256:"), "details": {},
                                "expires_at": expires, "size_vram": m.vram_bytes,
                                "context_length": m.context_length}
                continue
            row["size"] += m.memory_bytes
            row["size_vram"] += m.vram_bytes
            row["expires_at"] = max(row["expires_at"], expires)
            if m.mode == run_spec_pb2.MODE_CHAT:  # the window a chat gets
                row["context_length"] = m.context_length
        for name, row in rows.items():
            try:
                row["details"] = _details(await self.gw.api.get_record(name))
            except LookupError:
                pass
            row["expires_at"] = row["expires_at"].isoformat().replace("+00:00", "Z")
        return JSONResponse({"models": list(rows.values())})

    async def chat(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        fields.check(f, "chat")
        model = await ollama_name(self.gw, f.str("model", required=True))
        raw_messages = f.list("messages") or []
        for i, m in enumerate(raw_messages):
            if isinstance(m, dict):  # not an object: chat_messages says so
                fields.check(Fields(m, f"messages[{i}]."), "message")
                if "tool_name" in m and "name" not in m:  # ollama names the tool a result is of
                    m["name"] = Fields(m, f"messages[{i}].").str("tool_name")
            calls = m.get("tool_calls") if isinstance(m, dict) else None  # ollama sends arguments as objects
            for call in calls if isinstance(calls, list) else []:  # not a list: chat_messages says so
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and not isinstance(fn.get("arguments", ""), str):
                    fn["arguments"] = json.dumps(fn["arguments"])
        tools, choice = tools_of(f)
        params, num_ctx = fields.sampling_options(f, "options", self.gw.settings.max_tokens_limit)
        logprobs, top = fields.logprobs_of(f)
        req = runtime_pb2.ChatRequest(
            model=model, params=params, response_format=format_of(f), tools=tools, tool_choice=choice,
            keep_alive=keep_alive(f.data.get("keep_alive")), context_length=num_ctx,
            logprobs=logprobs, top_logprobs=top)
        think = fields.think_of(f)
        if think is not None:
            req.think = think
        # ollama's truncate (default true): a prompt too long for the window is fitted, older
        # turns first; options.num_ctx narrows the window (0: the loaded one)
        req.truncate = f.bool("truncate", True)
        stream = f.bool("stream", True)
        if not raw_messages:  # ollama: an empty conversation just loads (or unloads) the model
            reason = await load_or_unload(self.gw, model, req.keep_alive)
            return self._done_response(model, {"message": {"role": "assistant", "content": ""},
                                               "done_reason": reason}, stream)
        req.messages.extend(chat_messages(raw_messages))
        messages = await primed(self.gw.api.chat(req))
        load_ns = 0
        if stream:
            return ClosingStreamingResponse(self._chat_ndjson(messages, model, load_ns),
                                            media_type="application/x-ndjson")
        answer = Answer()
        async for m in messages:
            answer.add(m)
        message: dict[str, Any] = {"role": "assistant", "content": answer.text}
        if answer.reasoning:
            message["thinking"] = answer.thought
        if answer.calls:
            message["tool_calls"] = self._calls(answer.calls)
        extra = {"logprobs": logprobs_json(answer.logprobs)} if req.logprobs else {}
        return JSONResponse({"model": model, "created_at": _now(), "message": message, "done": True,
                             **extra, **_final_fields(answer.final, load_ns)})

    @staticmethod
    def _calls(calls: ToolCalls) -> list[dict[str, Any]]:
        # Ollama sends each tool call whole, with arguments as an object.
        out = []
        for d in calls.whole():
            try:
                args = json.loads(d.arguments) if d.arguments else {}
            except json.JSONDecodeError:
                args = {}
            if d.name:
                out.append({"function": {"name": d.name, "arguments": args}})
        return out

    def _done_response(self, model: str, extra: dict[str, Any], stream: bool) -> Response:
        body = {"model": model, "created_at": _now(), **extra, "done": True}
        if stream:
            return Response(json.dumps(body) + "\n", media_type="application/x-ndjson")
        return JSONResponse(body)

    async def _chat_ndjson(self, messages: AsyncIterator[runtime_pb2.ChatResponse], model: str,
                           load_ns: int) -> AsyncIterator[str]:
        head = '{"model": ' + json.dumps(model) + ', "created_at": "'
        calls = ToolCalls()  # argument deltas are joined: ollama sends whole calls
        try:
            async for m in messages:
                calls.add(m.tool_calls)
                if m.reasoning or m.logprobs:
                    piece: dict[str, Any] = {"role": "assistant", "content": m.content}
                    if m.reasoning:
                        piece["thinking"] = m.reasoning
                    chunk: dict[str, Any] = {"model": model, "created_at": _now(), "message": piece, "done": False}
                    if m.logprobs:
                        chunk["logprobs"] = logprobs_json(m.logprobs)
                    yield json.dumps(chunk) + "\n"
                elif m.content:
                    yield (head + _now() + '", "message": {"role": "assistant", "content": '
                           + json.dumps(m.content) + '}, "done": false}\n')
                if m.finish_reason:
                    message: dict[str, Any] = {"role": "assistant", "content": ""}
                    if calls:
                        message["tool_calls"] = self._calls(calls)
                    yield json.dumps({"model": model, "created_at": _now(), "message": message,
                                      "done": True, **_final_fields(m, load_ns)}) + "\n"
        except OmgError as e:
            yield stream_error_line(e, "ollama") + "\n"

    async def generate(self, request: Request) -> Response:
        f = Fields(await read_json(request, self.gw.body_limit))
        fields.check(f, "generate")
        model = await ollama_name(self.gw, f.str("model", required=True))
        prompt = f.str("prompt")
        system = f.str("system")
        raw = f.bool("raw", False)
        stream = f.bool("stream", True)
        params, context_length = fields.sampling_options(f, "options", self.gw.settings.max_tokens_limit)
        fmt = format_of(f)
        ka = keep_alive(f.data.get("keep_alive"))
        truncate = f.bool("truncate", True)
        logprobs, top = fields.logprobs_of(f)
        think = fields.think_of(f)
        if think is not None and raw:
            raise InvalidArgument("'think' does not apply to a raw prompt: the template, which writes the "
                                  "reasoning block, is not used", param="think")
        if not prompt:  # ollama: an empty prompt just loads (or unloads) the model
            reason = await load_or_unload(self.gw, model, ka)
            return self._done_response(model, {"response": "", "done_reason": reason}, stream)
        if raw:
            messages = await primed(self.gw.api.complete(runtime_pb2.CompleteRequest(
                model=model, prompt=prompt, params=params,
                response_format=fmt, keep_alive=ka, truncate=truncate, context_length=context_length,
                logprobs=logprobs, top_logprobs=top)))
        else:
            conv = ([runtime_pb2.ChatMessage(role="system", content=system)] if system else []) + [
                runtime_pb2.ChatMessage(role="user", content=prompt)]
            chat = runtime_pb2.ChatRequest(
                model=model, messages=conv, params=params, response_format=fmt, keep_alive=ka,
                truncate=truncate, context_length=context_length, logprobs=logprobs, top_logprobs=top)
            if think is not None:
                chat.think = think
            messages = await primed(self.gw.api.chat(chat))
        if stream:
            return ClosingStreamingResponse(self._generate_ndjson(messages, model),
                                            media_type="application/x-ndjson")
        text: list[str] = []
        thinking: list[str] = []
        lps: list[runtime_pb2.TokenLogprob] = []
        final: Any = None
        async for m in messages:
            text.append(m.text if raw else m.content)
            if not raw:
                thinking.append(m.reasoning)
            lps.extend(m.logprobs)
            if m.finish_reason:
                final = m
        extra: dict[str, Any] = {"thinking": "".join(thinking)} if any(thinking) else {}
        if logprobs:
            extra["logprobs"] = logprobs_json(lps)
        return JSONResponse({"model": model, "created_at": _now(), "response": "".join(text), **extra,
                             "done": True, **_final_fields(final or runtime_pb2.ChatResponse(), 0)})

    async def _generate_ndjson(self, messages: AsyncIterator[Any], model: str) -> AsyncIterator[str]:
        head = '{"model": ' + json.dumps(model) + ', "created_at": "'
        try:
            async for m in messages:
                text = m.text if isinstance(m, runtime_pb2.CompleteResponse) else m.content
                reasoning = getattr(m, "reasoning", "")
                if reasoning or m.logprobs:
                    chunk: dict[str, Any] = {"model": model, "created_at": _now(), "response": text}
                    if reasoning:
                        chunk["thinking"] = reasoning
                    if m.logprobs:
                        chunk["logprobs"] = logprobs_json(m.logprobs)
                    yield json.dumps({**chunk, "done": False}) + "\n"
                elif text:
                    yield head + _now() + '", "response": ' + json.dumps(text) + ', "done": false}\n'
                if m.finish_reason:
                    yield json.dumps({"model": model, "created_at": _now(), "response": "", "done": True,
                                      **_final_fields(m, 0)}) + "\n"
        except OmgError as e:
            yield stream_error_line(e, "ollama") + "\n"
