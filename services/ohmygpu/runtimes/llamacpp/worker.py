"""The llama.cpp worker: one process, one GGUF model, serving the Runtime contract.

Started by the daemon as `python -m ohmygpu.runtimes.llamacpp.worker --socket PATH`. A chat or
completion model is served by engine.py: one context, N sequences (RunSpec max_concurrency)
decoded together in one batch per step, with prompt-prefix reuse. Generation runs on the
engine's thread and its text pieces cross to the event loop through an asyncio queue, so Health
answers while generations run and a cancelled stream stops generation at the next step. An
embeddings model is one context whose calls run, one at a time, on a thread of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import sampling
from ohmygpu.core.errors import ContextLengthExceeded, InvalidArgument, OmgError
from ohmygpu.core.estimate import context_window
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.chat_template import ChatTemplate, TemplateFailed
from ohmygpu.runtimes.api.generation import GenerationResult, Sampling
from ohmygpu.runtimes.api.mailbox import Mailbox
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker
from ohmygpu.runtimes.llamacpp import selftest, structured
from ohmygpu.runtimes.llamacpp.engine import BatchEngine, Job
from ohmygpu.runtimes.llamacpp.grammar import compile_grammar
from ohmygpu.runtimes.llamacpp.loading import open_model, prepare_text
from ohmygpu.runtimes.llamacpp.prompt import PromptBuilder, answer_room
from ohmygpu.runtimes.llamacpp.reasoning import OPEN as OPEN_REASONING
from ohmygpu.runtimes.llamacpp.reasoning import ReasoningSplitter
from ohmygpu.runtimes.llamacpp.tokenize import Cancelled, Tokenizer, TooManyTokens

log = logging.getLogger("ohmygpu.worker.llamacpp")
_DONE = object()
STUB_CONTEXT = 32  # tokens of the Llama's own context, unused for generation: engine.py has the real one


async def _abort(context: grpc.aio.ServicerContext, e: OmgError) -> None:
    # A specific error (context_length_exceeded) is named in metadata so the daemon raises it again.
    reason = getattr(e, "reason", "")
    await context.abort(grpc.StatusCode[e.grpc_code], e.message,
                        trailing_metadata=(("omg-error", reason),) if reason else ())


class LlamaCppRuntime(BaseRuntime):
    """Runtime servicer over one llama_cpp.Llama (its weights) and the engine that batches."""

    runtime_name = "llama.cpp"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.llm: Any = None
        self.template: ChatTemplate | None = None
        self.template_error: TemplateFailed | None = None  # the model's template does not compile
        self.tokenizer: Tokenizer | None = None
        self.engine: BatchEngine | None = None
        self.mailbox: Mailbox | None = None
        self.mailbox_loop: asyncio.AbstractEventLoop | None = None
        self.window = 0  # tokens per sequence (prompt and answer)
        # Embeddings run on one thread of their own: ggml's OpenMP keeps a thread team per
        # calling thread, and calls from a pool's changing threads pile up teams (engine.py).
        self.embed_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.embed_lock = asyncio.Lock()
        # Prompts are rendered and tokenized (bounded by the window) and grammars compiled off the
        # engine, two at once, so a prompt is ready while others decode and a long one never
        # holds up a step.
        self.prompt_executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="prompt")
        self.grammar_cache: dict[str, Any] = {}
        self.template_timeout = 2.0

    # -- lifecycle --------------------------------------------------------------------------

    async def GetCapabilities(self, request, context):
        import llama_cpp

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="llamacpp",
            version=llama_cpp.__version__,
            modes=[run_spec_pb2.MODE_CHAT, run_spec_pb2.MODE_COMPLETION,
                   run_spec_pb2.MODE_EMBEDDINGS],
            formats=[assets_pb2.ARTIFACT_FORMAT_GGUF],
            structured_output=True,
            tool_calls=True,
            gpu=bool(llama_cpp.llama_supports_gpu_offload()),
        )

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        record = request.model
        weights, lora = record, ""
        if record.kind == assets_pb2.MODEL_KIND_ADAPTER:
            # A LoRA adapter: the base's weights, the GGUF LoRA of the record applied over them.
            name = record.adapter.gguf_adapter
            lora = next((a.local_path for a in record.artifacts if name and a.filename == name), "")
            if not lora or not request.HasField("base"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "an adapter needs its GGUF LoRA file and its GGUF base model")
            weights = request.base
        paths = [a.local_path for a in weights.artifacts if a.format == assets_pb2.ARTIFACT_FORMAT_GGUF]
        if not paths:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no GGUF artifact to load")
        res = request.spec.resources
        self.threads = res.cpu_threads or (os.cpu_count() or 1)
        n_ctx = context_window(weights, res.context_length)  # the daemon's estimate uses the same rule
        gpu_layers = res.gpu_layers if res.HasField("gpu_layers") else 0
        embedding = request.spec.mode == run_spec_pb2.MODE_EMBEDDINGS
        parallel = max(1, min(res.max_concurrency or 1, 64))
        self.state = runtime_pb2.WORKER_STATE_LOADING
        yield runtime_pb2.LoadResponse(progress=0.0, stage="reading weights")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-load")
            if embedding:
                self.embed_executor = executor
                self.llm = await loop.run_in_executor(executor, open_model, paths[0], n_ctx, gpu_layers,
                                                      True, self.threads, lora)
                self.window = self.llm.n_ctx()
                n, took = await loop.run_in_executor(executor, selftest.check_batched_eval, self.llm, self.threads)
            else:
                # The Llama holds the weights; its own context is a token stub. The engine's
                # context holds every sequence's KV cache.
                self.llm = await loop.run_in_executor(executor, open_model, paths[0], STUB_CONTEXT,
                                                      gpu_layers, False, self.threads, lora)
                executor.shutdown(wait=False)
                yield runtime_pb2.LoadResponse(progress=0.5, stage=f"context: {parallel} x {n_ctx} tokens")
                self.engine = BatchEngine(self.llm, sequences=parallel, window=n_ctx, threads=self.threads,
                                          isolate_seeded=gpu_layers != 0)
                await asyncio.to_thread(self.engine.start)
                self.window = self.engine.window
                # Before READY: a build that traps on this CPU dies here, not on a user's prompt.
                n, took = await asyncio.wrap_future(self.engine.call(
                    lambda: self.engine.check_batched_eval(selftest.selftest_tokens())))
            log.info("self-test: %d tokens batched on %d threads in %.2fs", n, self.threads, took)
        except Exception as e:  # noqa: BLE001 - a hostile file can make llama.cpp raise anything
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %s", e)  # the log may name the path; the answer must not
            await context.abort(grpc.StatusCode.INTERNAL, "the file is not a loadable model: llama.cpp "
                                "could not load it (its header or tensor data is damaged or unsupported)")
        try:
            text = prepare_text(self.llm, request.spec, record.derived.template)
            self.tokenizer, self.template, self.template_error = text.tokenizer, text.template, text.error
            self.template_timeout = text.template_timeout
        except Exception as e:  # noqa: BLE001
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed after the weights: %s", e)
            await context.abort(grpc.StatusCode.INTERNAL, "the file is not a loadable model: its "
                                "vocabulary or metadata cannot be read")
        self.model_name = record.name
        self.state = runtime_pb2.WORKER_STATE_READY
        log.info("loaded %s in %.2fs (n_ctx=%d, threads=%d, gpu_layers=%d, sequences=%d)", record.name,
                 time.perf_counter() - started, self.window, self.threads, gpu_layers,
                 1 if embedding else parallel)
        yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())

    async def Unload(self, request, context):
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.close)  # cancels what runs, frees the context
        async with self.embed_lock:
            llm, self.llm = self.llm, None
            executor, self.embed_executor = self.embed_executor, None
            if llm is not None:
                if executor is not None:
                    await asyncio.get_running_loop().run_in_executor(executor, llm.close)
                    executor.shutdown(wait=True)
                else:
                    await asyncio.to_thread(llm.close)
        self.template = None
        self.model_name = ""
        self.state = runtime_pb2.WORKER_STATE_IDLE
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        return self.status(context_length=self.window if self.llm is not None else 0)

    # -- inference --------------------------------------------------------------------------

    async def Chat(self, request: runtime_pb2.ChatRequest, context) -> AsyncIterator[runtime_pb2.ChatResponse]:
        try:
            async for message in self._chat(request):
                yield message
        except OmgError as e:
            await _abort(context, e)

    async def _chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        cancelled = threading.Event()
        plan, prompt, opens_reasoning = await self._chat_prompt(request, cancelled)
        names = {t.name for t in request.tools}
        window = self._window(request.context_length)
        top = _logprobs_wanted(request.logprobs, request.top_logprobs)
        # A reasoning model's thoughts are split from its answer, unless a grammar shapes the
        # output (then it is all answer: JSON or a tool call).
        assert self.template is not None
        constrained = plan.schema is not None or plan.any_json or plan.mode in (
            structured.OutputMode.TOOL_ARGUMENTS, structured.OutputMode.TOOL_CALL)
        splitter = ReasoningSplitter(inside=opens_reasoning) if self.template.thinks and not constrained else None

        async def pieces() -> AsyncIterator[tuple[str, str, list[runtime_pb2.TokenLogprob], GenerationResult | None]]:
            """(reasoning, content, logprobs, None) per step, then ("", "", [], result)."""
            async for out in self._run(prompt, request.params, plan, window, cancelled, top):
                if out.result is not None and splitter is not None:
                    rest = splitter.close()
                    if rest.reasoning or rest.content:
                        yield rest.reasoning, rest.content, [], None
                if out.result is not None:
                    yield "", "", [], out.result
                elif splitter is None:
                    yield "", out.text, out.logprobs, None
                else:
                    split = splitter.feed(out.text)
                    if split.reasoning or split.content or out.logprobs:
                        yield split.reasoning, split.content, out.logprobs, None

        if plan.mode is structured.OutputMode.TEXT:
            async for reasoning, piece, logprobs, result in pieces():
                if result is None:
                    yield runtime_pb2.ChatResponse(content=piece, reasoning=reasoning, logprobs=logprobs)
                else:
                    yield _final_chat(result)
            return
        if plan.mode is structured.OutputMode.TOOL_ARGUMENTS:
            # The grammar produces the arguments object itself: stream it as argument deltas.
            call_id = structured.new_call_id()
            first = True
            async for _, piece, _, result in pieces():
                if result is None:
                    delta = runtime_pb2.ToolCallDelta(index=0, arguments=piece)
                    if first:
                        delta.id, delta.name, first = call_id, plan.function_name, False
                    yield runtime_pb2.ChatResponse(tool_calls=[delta])
                else:
                    if first:  # nothing generated: still report the call
                        yield runtime_pb2.ChatResponse(tool_calls=[runtime_pb2.ToolCallDelta(
                            index=0, id=call_id, name=plan.function_name, arguments="{}")])
                    final = _final_chat(result)
                    if final.finish_reason == runtime_pb2.FINISH_REASON_STOP:
                        final.finish_reason = runtime_pb2.FINISH_REASON_TOOL_CALLS
                    yield final
            return
        # TOOL_CALL and TOOL_AUTO: hold text while it may be a call, then decide.
        held = ""
        streaming_text = False
        async for reasoning, piece, logprobs, result in pieces():
            if result is None:
                if reasoning:
                    yield runtime_pb2.ChatResponse(reasoning=reasoning)
                if streaming_text:
                    yield runtime_pb2.ChatResponse(content=piece, logprobs=logprobs)
                    continue
                held += piece
                if plan.mode is structured.OutputMode.TOOL_AUTO and not structured.could_be_tool_call(held):
                    streaming_text = True
                    yield runtime_pb2.ChatResponse(content=held)
                continue
            final = _final_chat(result)
            calls = None if streaming_text else structured.parse_tool_calls(held, names)
            if calls and request.HasField("parallel_tool_calls") and not request.parallel_tool_calls:
                calls = calls[:1]  # the caller takes one call per turn
            if calls:
                yield runtime_pb2.ChatResponse(tool_calls=[
                    runtime_pb2.ToolCallDelta(index=i, id=structured.new_call_id(), name=n, arguments=a)
                    for i, (n, a) in enumerate(calls)])
                if final.finish_reason == runtime_pb2.FINISH_REASON_STOP:
                    final.finish_reason = runtime_pb2.FINISH_REASON_TOOL_CALLS
            elif held and not streaming_text:
                yield runtime_pb2.ChatResponse(content=held)
            yield final

    async def CountTokens(self, request: runtime_pb2.CountTokensRequest, context) -> runtime_pb2.CountTokensResponse:
        # The prompt a Chat of the same request would evaluate: rendered, escaped and tokenized
        # by the same code, under the same window (a longer one is ContextLengthExceeded).
        try:
            _, tokens, _ = await self._chat_prompt(request.chat, threading.Event())
        except OmgError as e:
            await _abort(context, e)
        return runtime_pb2.CountTokensResponse(prompt_tokens=len(tokens))

    def _window(self, requested: int) -> int:
        """A request's context window: the loaded one, or less when the request asks (num_ctx)."""
        return min(self.window, requested) if requested else self.window

    async def _off_engine(self, fn: Any, cancelled: threading.Event) -> Any:
        """fn() on the prompt threads; a request that goes away stops it at its next check."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.prompt_executor, fn)
        except Cancelled:
            raise asyncio.CancelledError() from None
        except BaseException:
            cancelled.set()
            raise

    async def _chat_prompt(self, request: runtime_pb2.ChatRequest, cancelled: threading.Event,
                           ) -> tuple[structured.OutputPlan, list[int], bool]:
        """The output plan, the prompt's tokens, and whether the prompt opened a reasoning block
        (the template ends it with `<think>`: the output starts inside it)."""
        if self.llm is None or self.tokenizer is None:
            raise InvalidArgument("no model loaded")
        if self.template is None:
            raise self.template_error or InvalidArgument("no model loaded")
        if not request.messages:
            raise InvalidArgument("messages must not be empty", param="messages")
        if request.think and not self.template.thinks:
            raise InvalidArgument("this model does not support thinking: its chat template has no "
                                  "reasoning block", param="think")
        plan = structured.plan_output(request.response_format, list(request.tools), request.tool_choice)
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            msg: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.name:
                msg["name"] = m.name
            if m.tool_calls:
                msg["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
            if m.tool_call_id:
                msg["tool_call_id"] = m.tool_call_id
            messages.append(msg)
        tools = None
        wants_tools = request.tools and plan.mode is not structured.OutputMode.TEXT
        if wants_tools and self.template.supports_tools:
            tools = structured.tools_for_template(list(request.tools))
        elif wants_tools:
            # The model's template knows no tools: describe them in the system message.
            note = structured.tools_system_prompt(list(request.tools))
            if messages[0]["role"] == "system":
                messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + note}
            else:
                messages.insert(0, {"role": "system", "content": note})
        template, tokenizer = self.template, self.tokenizer
        escaped_tools = tokenizer.escape(tools) if tools else None
        think = request.think if request.HasField("think") else None
        rendered = [""]

        def render(msgs: list[dict[str, Any]]) -> str:
            rendered[0] = template.render(msgs, tools=escaped_tools, enable_thinking=think)
            return rendered[0]

        builder = PromptBuilder(tokenizer, render, n_ctx=self._window(request.context_length), cancelled=cancelled)
        max_tokens = request.params.max_tokens if request.params.HasField("max_tokens") else None
        tokens = await self._off_engine(
            lambda: builder.build(messages, truncate=request.truncate, max_tokens=max_tokens), cancelled)
        return plan, tokens, rendered[0].rstrip().endswith(OPEN_REASONING)

    async def Complete(self, request: runtime_pb2.CompleteRequest, context) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        try:
            async for message in self._complete(request):
                yield message
        except OmgError as e:
            await _abort(context, e)

    async def _complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        if self.llm is None or self.tokenizer is None:
            raise InvalidArgument("no model loaded")
        plan = structured.plan_output(request.response_format, [], runtime_pb2.ToolChoice())
        cancelled = threading.Event()
        window = self._window(request.context_length)
        tokenizer, text = self.tokenizer, request.prompt
        # Raw completions are the caller's own template: their special texts are special tokens.
        bos = self.llm._model.tokenize(b"", True, False)  # the model's BOS, if it wants one
        max_tokens = request.params.max_tokens if request.params.HasField("max_tokens") else None

        def tokens() -> list[int]:
            limit = window - 1 - len(bos)
            try:
                return bos + tokenizer.encode(text, limit=limit, cancelled=cancelled)
            except TooManyTokens as e:
                if not request.truncate:
                    raise ContextLengthExceeded(
                        f"the prompt has more than {e.count - 1} tokens, more than this model's context "
                        f"window of {window} tokens; shorten it", param="prompt") from None
            return bos + tokenizer.encode_tail(text, window - answer_room(window, max_tokens) - len(bos),
                                               specials=True)

        prompt = await self._off_engine(tokens, cancelled)
        top = _logprobs_wanted(request.logprobs, request.top_logprobs)
        async for out in self._run(prompt, request.params, plan, window, cancelled, top):
            if out.result is None:
                yield runtime_pb2.CompleteResponse(text=out.text, logprobs=out.logprobs)
            else:
                final = _final_chat(out.result)
                yield runtime_pb2.CompleteResponse(finish_reason=final.finish_reason,
                                                   usage=final.usage, timings=final.timings)

    async def _grammar(self, plan: structured.OutputPlan, cancelled: threading.Event) -> Any:
        if plan.schema is None and not plan.any_json:
            return None
        key = "any" if plan.schema is None else json.dumps(plan.schema, sort_keys=True)
        if key not in self.grammar_cache:
            vocab, timeout = self.llm._model.vocab, self.template_timeout
            grammar = await self._off_engine(lambda: compile_grammar(plan, vocab, timeout_s=timeout), cancelled)
            if len(self.grammar_cache) > 32:
                self.grammar_cache.clear()
            self.grammar_cache[key] = grammar
        return self.grammar_cache[key]

    async def _run(
        self, tokens: list[int], params: run_spec_pb2.SamplingParams, plan: structured.OutputPlan,
        window: int, cancelled: threading.Event, logprobs: int = -1,
    ) -> AsyncIterator[_Out]:
        """Yields an _Out per text piece (with its tokens' log probabilities when `logprobs` >= 0:
        that many alternatives each), then one with the result. Cancels on consumer exit."""
        if self.engine is None:
            raise InvalidArgument("this model is loaded for embeddings" if self.llm is not None
                                  else "no model loaded")
        if len(tokens) >= window:  # the prompt builders keep under it; this is the last guard
            raise ContextLengthExceeded(f"the prompt has {len(tokens)} tokens, more than this model's "
                                        f"context window of {window} tokens")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        grammar = await self._grammar(plan, cancelled)
        finished: asyncio.Future[GenerationResult] = loop.create_future()
        post = self._mailbox(loop).post

        def done(outcome: GenerationResult | BaseException) -> None:
            def settle() -> None:
                if finished.done():
                    return
                if isinstance(outcome, BaseException):
                    finished.set_exception(outcome)
                else:
                    finished.set_result(outcome)
                queue.put_nowait(_DONE)
            post(lambda _: settle(), None)

        put = queue.put_nowait
        job = Job(prompt=tokens, sampling=Sampling.from_params(params), grammar=grammar, window=window,
                  emit=lambda piece: post(put, piece),
                  finish=done, cancelled=cancelled, logprobs=logprobs,
                  on_logprob=(lambda entry: post(put, entry)) if logprobs >= 0 else None)
        self.in_flight += 1
        try:
            self.engine.submit(job)
            done_seen = False
            while not done_seen:
                item = await queue.get()
                if item is _DONE:
                    break
                out = _Out()
                out.add(item)
                # When the reader lags, send what has piled up as one message.
                while not queue.empty():
                    more = queue.get_nowait()
                    if more is _DONE:
                        done_seen = True
                        break
                    out.add(more)
                if out.text or out.logprobs:
                    yield out
            yield _Out(result=await finished)
        finally:
            cancelled.set()  # the engine drops the sequence at its next step
            self.in_flight -= 1

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        """The engine thread's way onto this loop (one per loop: tests run several)."""
        if self.mailbox is None or self.mailbox_loop is not loop:
            self.mailbox, self.mailbox_loop = Mailbox(loop), loop
        return self.mailbox

    async def Embed(self, request: runtime_pb2.EmbedRequest, context):
        if self.llm is None or not self.llm.context_params.embeddings:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "this model was not loaded for embeddings")
        truncate = request.truncate if request.HasField("truncate") else True
        dims = request.dimensions
        if dims and dims > self.llm.n_embd():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"dimensions must be at most {self.llm.n_embd()} for this model")
        inputs = list(request.inputs)

        def work(llm: Any) -> tuple[list[list[float]], int, int]:
            started = time.perf_counter_ns()
            if not truncate:
                limit = llm.n_batch
                for i, text in enumerate(inputs):
                    n = len(llm.tokenize(text.encode("utf-8")))
                    if n > limit:
                        raise InvalidArgument(f"input {i} has {n} tokens, more than the context window of "
                                              f"{limit}; shorten it or allow truncation", param="input")
            # Normalised after any truncation to `dimensions` (Matryoshka-style shortening).
            vectors, tokens = llm.embed(inputs, normalize=False, truncate=True, return_count=True)
            return vectors, tokens, time.perf_counter_ns() - started

        assert self.embed_executor is not None
        async with self.embed_lock:
            self.in_flight += 1
            try:
                vectors, tokens, elapsed = await asyncio.get_running_loop().run_in_executor(
                    self.embed_executor, work, self.llm)
            except OmgError as e:
                await _abort(context, e)
            finally:
                self.in_flight -= 1
        out = runtime_pb2.EmbedResponse(usage=runtime_pb2.Usage(prompt_tokens=tokens),
                                        timings=runtime_pb2.Timings(prompt_eval_ns=elapsed))
        for v in vectors:
            values = v[:dims] if dims else v
            if request.normalize:
                norm = math.sqrt(sum(x * x for x in values)) or 1.0
                values = [x / norm for x in values]
            out.embeddings.add(values=values)
        return out


def _logprobs_wanted(logprobs: bool, top: int) -> int:
    """The engine's logprobs argument: -1 none, else alternatives per token."""
    sampling.check_logprobs(logprobs, top)
    return top if logprobs else -1


@dataclass
class _Out:
    """What the engine produced since the last message: text and its tokens' log probabilities,
    or, last, the result."""

    text: str = ""
    logprobs: list[runtime_pb2.TokenLogprob] = field(default_factory=list)
    result: GenerationResult | None = None

    def add(self, item: str | runtime_pb2.TokenLogprob) -> None:
        if isinstance(item, str):
            self.text += item
        else:
            self.logprobs.append(item)


def _final_chat(result: GenerationResult) -> runtime_pb2.ChatResponse:
    return runtime_pb2.ChatResponse(
        finish_reason=result.finish_reason,
        usage=runtime_pb2.Usage(prompt_tokens=result.prompt_tokens,
                                completion_tokens=result.completion_tokens,
                                cached_tokens=result.cached_tokens),
        timings=runtime_pb2.Timings(prompt_eval_ns=result.prompt_eval_ns, eval_ns=result.eval_ns),
        stop_sequence=result.stop_sequence,
    )


def main() -> None:
    # The engine thread gives up the GIL for every llama_decode and must get it back at once to
    # sample and start the next step; with Python's default 5 ms switch interval the event loop
    # (sending every stream's tokens) could hold it that long, a fifth of a step. Measured with 8
    # clients on 4 sequences: ~95 -> ~110 tokens/s.
    sys.setswitchinterval(0.0005)
    run_worker(LlamaCppRuntime)


if __name__ == "__main__":
    main()
