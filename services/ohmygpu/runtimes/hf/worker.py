"""The transformers worker: one process, one Hugging Face format model (safetensors), serving the
Runtime contract: Chat, Complete and CountTokens for a causal LM (its own chat template),
Embed for a sentence-transformers model (its modules.json's pooling and normalisation) or an
encoder / LLM (mean pooling), Rerank for a cross-encoder, and a PEFT LoRA adapter over its base
when LoadRequest.base is set.

Started by the daemon as `python -m ohmygpu.runtimes.hf.worker --socket PATH`. All torch work
runs on one dedicated thread, one request at a time (a lock; the daemon queues the rest): no
batching across requests. Text pieces cross to the event loop through an asyncio queue, so
Health answers while a generation runs and a cancelled stream stops it at the next token.

Not supported, and refused by the daemon before a request gets here (core/capabilities.refusal)
as well as here: tools, response formats (no grammar), log probabilities, thinking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import ContextLengthExceeded, InvalidArgument, InvalidModelFile, OmgError
from ohmygpu.core.estimate import ENCODER_MAX_TOKENS, context_window
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.chat_template import ChatTemplate, TemplateFailed
from ohmygpu.runtimes.api.generation import GenerationResult, Sampling
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker
from ohmygpu.runtimes.hf import loading
from ohmygpu.runtimes.hf.generate import end_tokens, generate

log = logging.getLogger("ohmygpu.worker.transformers")
_DONE = object()
_BATCH = 32  # inputs (or query-document pairs) per forward pass of an encoder


async def _abort(context: grpc.aio.ServicerContext, e: OmgError) -> None:
    reason = getattr(e, "reason", "")  # context_length_exceeded: the daemon raises it again
    await context.abort(grpc.StatusCode[e.grpc_code], e.message,
                        trailing_metadata=(("omg-error", reason),) if reason else ())


async def _internal(context: grpc.aio.ServicerContext, e: BaseException) -> None:
    log.error("generation failed: %r", e)
    await context.abort(grpc.StatusCode.INTERNAL, "generation failed inside transformers (the worker log "
                        "has the details)")


class TransformersRuntime(BaseRuntime):
    """Runtime servicer over one transformers (or sentence-transformers) model."""

    runtime_name = "transformers"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.mode = run_spec_pb2.MODE_UNSPECIFIED
        self.model: Any = None  # causal LM, encoder, cross-encoder or SentenceTransformer
        self.tokenizer: Any = None
        self.template: ChatTemplate | None = None
        self.template_error: TemplateFailed | None = None
        self.escaper: loading.SpecialEscaper | None = None
        self.eos: set[int] = set()
        self.device = "cpu"
        self.window = 0
        self.lock = asyncio.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")

    # -- lifecycle --------------------------------------------------------------------------

    async def GetCapabilities(self, request, context):
        import torch
        import transformers

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="transformers", version=f"transformers {transformers.__version__}, torch {torch.__version__}",
            modes=[run_spec_pb2.MODE_CHAT, run_spec_pb2.MODE_COMPLETION, run_spec_pb2.MODE_EMBEDDINGS,
                   run_spec_pb2.MODE_RERANK],
            formats=[assets_pb2.ARTIFACT_FORMAT_SAFETENSORS],
            structured_output=False, tool_calls=False, gpu=torch.cuda.is_available(),
        )

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        record = request.model
        base = request.base if request.HasField("base") else None
        res = request.spec.resources
        self.threads = res.cpu_threads or (os.cpu_count() or 1)
        self.state = runtime_pb2.WORKER_STATE_LOADING
        yield runtime_pb2.LoadResponse(progress=0.0, stage="reading weights")
        started = time.perf_counter()
        try:
            self.device = await self._on_thread(loading.device_of, request.spec)
            await self._on_thread(self._load, record, base, request.spec)
        except InvalidModelFile as e:
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %s", e.message)
            await context.abort(grpc.StatusCode.INTERNAL, f"the model is not loadable: {e.message}")
        except OmgError as e:
            self.state = runtime_pb2.WORKER_STATE_FAILED
            await _abort(context, e)
        except Exception as e:  # noqa: BLE001 - a hostile or broken folder can make transformers raise anything
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %r", e)  # the log may name the path; the answer must not
            await context.abort(grpc.StatusCode.INTERNAL, "the model is not loadable: transformers could not "
                                "load it (its config, tokenizer or safetensors weights are damaged or unsupported)")
        self.model_name = record.name
        self.state = runtime_pb2.WORKER_STATE_READY
        log.info("loaded %s in %.2fs (mode=%s, device=%s, threads=%d, window=%d)", record.name,
                 time.perf_counter() - started, run_spec_pb2.Mode.Name(self.mode), self.device, self.threads,
                 self.window)
        yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())

    def _load(self, record: assets_pb2.InstallRecord, base: assets_pb2.InstallRecord | None,
              spec: run_spec_pb2.RunSpec) -> None:
        """(On the torch thread.) Open the model the record and mode say; after a failure the
        worker holds no model (a later Load may succeed)."""
        try:
            self._open(record, base, spec)
        except BaseException:
            self.model = self.tokenizer = self.template = self.escaper = None
            _free_memory(self.device)
            raise

    def _open(self, record: assets_pb2.InstallRecord, base: assets_pb2.InstallRecord | None,
              spec: run_spec_pb2.RunSpec) -> None:
        import torch

        torch.set_num_threads(max(1, self.threads))
        folder = loading.model_folder(record)
        dtype = loading.dtype_of(spec)
        self.mode = spec.mode or run_spec_pb2.MODE_CHAT
        if self.mode == run_spec_pb2.MODE_COMPLETION:
            self.mode = run_spec_pb2.MODE_CHAT
        described = base if base is not None else record  # an adapter's window is its base's
        if self.mode == run_spec_pb2.MODE_RERANK:
            self.model = loading.open_cross_encoder(folder, self.device, dtype)
            self.tokenizer = loading.open_tokenizer(folder)
            self.window = self._encoder_window(described)
            return
        if self.mode == run_spec_pb2.MODE_EMBEDDINGS:
            if described.transformers.sentence_transformers:
                self.model = loading.open_sentence_transformer(folder, self.device)
                self.tokenizer = self.model.tokenizer
                self.window = int(self.model.max_seq_length or self._encoder_window(described))
            else:
                self.model = loading.open_encoder(folder, self.device, dtype)
                self.tokenizer = loading.open_tokenizer(folder)
                if self.tokenizer.pad_token is None:  # an LLM's tokenizer: batches need padding
                    self.tokenizer.pad_token = self.tokenizer.eos_token
                self.window = self._encoder_window(described)
            return
        if self.mode != run_spec_pb2.MODE_CHAT:
            raise InvalidArgument(f"the transformers runtime does not serve mode "
                                  f"{run_spec_pb2.Mode.Name(self.mode)}")
        if base is not None:  # a PEFT LoRA adapter folder over its base model
            base_folder = loading.model_folder(base)
            self.model = loading.open_causal_lm(base_folder, self.device, dtype, adapter=folder)
            self.tokenizer = loading.open_tokenizer(folder, base_folder)
        else:
            self.model = loading.open_causal_lm(folder, self.device, dtype)
            self.tokenizer = loading.open_tokenizer(folder)
        self.window = context_window(described, spec.resources.context_length)
        self.template, self.template_error = loading.chat_template(
            self.tokenizer, record.derived.template, loading.template_timeout(spec))
        self.escaper = loading.SpecialEscaper(self.tokenizer)
        self.eos = end_tokens(self.model, self.tokenizer)

    @staticmethod
    def _encoder_window(record: assets_pb2.InstallRecord) -> int:
        return min(record.transformers.context_length or 512, ENCODER_MAX_TOKENS)

    async def _on_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def Unload(self, request, context):
        async with self.lock:
            self.model = self.tokenizer = self.template = self.escaper = None
            self.model_name = ""
            self.state = runtime_pb2.WORKER_STATE_IDLE
            await self._on_thread(_free_memory, self.device)
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        vram = 0
        if self.device.startswith("cuda"):
            import torch

            vram = int(torch.cuda.memory_reserved(self.device))
        return self.status(context_length=self.window if self.model is not None else 0, vram_bytes=vram)

    # -- generation -------------------------------------------------------------------------

    def _require(self, mode: int) -> None:
        if self.model is None:
            raise InvalidArgument("no model loaded")
        if self.mode != mode:
            what = {run_spec_pb2.MODE_CHAT: "chat", run_spec_pb2.MODE_EMBEDDINGS: "embeddings",
                    run_spec_pb2.MODE_RERANK: "reranking"}
            raise InvalidArgument(f"this model is loaded for {what.get(self.mode, 'another mode')}, "
                                  f"not {what.get(mode, 'this')}")

    @staticmethod
    def _refuse_unsupported(request: runtime_pb2.ChatRequest | runtime_pb2.CompleteRequest) -> None:
        """What the daemon refuses first (core/capabilities.refusal), refused here too for
        callers of the worker itself: never silently ignored."""
        if request.response_format.type not in (runtime_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED,
                                                runtime_pb2.RESPONSE_FORMAT_TYPE_TEXT):
            raise InvalidArgument("the transformers runtime does not support a response format",
                                  param="response_format")
        if request.logprobs:
            raise InvalidArgument("the transformers runtime does not support log probabilities", param="logprobs")
        if isinstance(request, runtime_pb2.ChatRequest):
            if request.tools and request.tool_choice.mode != runtime_pb2.TOOL_CHOICE_MODE_NONE:
                raise InvalidArgument("the transformers runtime does not support tool calls", param="tools")
            if request.HasField("think") and request.think:
                raise InvalidArgument("the transformers runtime does not support thinking", param="think")

    def _window(self, requested: int) -> int:
        return min(self.window, requested) if requested else self.window

    def _chat_prompt(self, request: runtime_pb2.ChatRequest) -> list[int]:
        """(On the torch thread.) The prompt's tokens: rendered, with special-token texts in the
        messages escaped; over the window, older turns go first when truncate is set, else
        ContextLengthExceeded."""
        if self.template is None:
            raise self.template_error or InvalidArgument("no model loaded")
        if not request.messages:
            raise InvalidArgument("messages must not be empty", param="messages")
        assert self.escaper is not None
        messages: list[dict[str, Any]] = []
        for m in request.messages:
            msg: dict[str, Any] = {"role": m.role, "content": self.escaper.escape(m.content)}
            if m.name:
                msg["name"] = self.escaper.escape(m.name)
            messages.append(msg)
        window = self._window(request.context_length)
        room = min(request.params.max_tokens, window // 4) if request.params.HasField("max_tokens") else window // 8
        while True:
            tokens = self.escaper.encode(self.template.render(messages))
            if len(tokens) < window - (room if request.truncate else 0):
                return tokens
            droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not request.truncate or not droppable:
                raise ContextLengthExceeded(
                    f"the prompt has {len(tokens)} tokens, more than this model's context window of "
                    f"{window} tokens; shorten it", param="messages")
            del messages[droppable[0]]

    def _complete_prompt(self, request: runtime_pb2.CompleteRequest) -> list[int]:
        # A raw completion is the caller's own template: its special texts are special tokens.
        tokens = list(self.tokenizer.encode(request.prompt, add_special_tokens=True))
        window = self._window(request.context_length)
        if len(tokens) >= window:
            if not request.truncate:
                raise ContextLengthExceeded(f"the prompt has {len(tokens)} tokens, more than this model's context "
                                            f"window of {window} tokens; shorten it", param="prompt")
            tokens = tokens[-(window - window // 8):]
        return tokens

    async def _generate(self, prompt_of: Any, request: Any,
                        context: Any) -> AsyncIterator[str | GenerationResult]:
        """Text pieces, then the result, of one generation (under the lock, on the torch
        thread); the generation stops at the next token once the consumer goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        sampling = Sampling.from_params(request.params)

        def work() -> GenerationResult:
            prompt = prompt_of(request)
            return generate(self.model, self.tokenizer, prompt, sampling, window=self._window(request.context_length),
                            eos=self.eos, emit=lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece),
                            cancelled=cancelled, device=self.device)

        async with self.lock:
            self._require(run_spec_pb2.MODE_CHAT)
            self.in_flight += 1
            fut = loop.run_in_executor(self.executor, work)
            fut.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
            try:
                done = False
                while not done and (item := await queue.get()) is not _DONE:
                    pieces = [item]
                    while not queue.empty():  # a lagging reader gets what piled up as one message
                        more = queue.get_nowait()
                        if more is _DONE:
                            done = True
                            break
                        pieces.append(more)
                    yield "".join(pieces)
                yield await fut
            finally:
                cancelled.set()
                self.in_flight -= 1
                if not fut.done():
                    await asyncio.wait([fut])

    async def Chat(self, request: runtime_pb2.ChatRequest, context) -> AsyncIterator[runtime_pb2.ChatResponse]:
        try:
            self._refuse_unsupported(request)
            async for item in self._generate(self._chat_prompt, request, context):
                if isinstance(item, str):
                    yield runtime_pb2.ChatResponse(content=item)
                else:
                    yield _final_chat(item)
        except OmgError as e:
            await _abort(context, e)
        except Exception as e:  # noqa: BLE001 - torch can fail in many ways; the log has it, the answer says so
            await _internal(context, e)

    async def Complete(self, request: runtime_pb2.CompleteRequest,
                       context) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        try:
            self._refuse_unsupported(request)
            async for item in self._generate(self._complete_prompt, request, context):
                if isinstance(item, str):
                    yield runtime_pb2.CompleteResponse(text=item)
                else:
                    final = _final_chat(item)
                    yield runtime_pb2.CompleteResponse(finish_reason=final.finish_reason, usage=final.usage,
                                                       timings=final.timings)
        except OmgError as e:
            await _abort(context, e)
        except Exception as e:  # noqa: BLE001
            await _internal(context, e)

    async def CountTokens(self, request: runtime_pb2.CountTokensRequest, context) -> runtime_pb2.CountTokensResponse:
        try:
            self._require(run_spec_pb2.MODE_CHAT)
            self._refuse_unsupported(request.chat)
            async with self.lock:
                tokens = await self._on_thread(self._chat_prompt, request.chat)
        except OmgError as e:
            await _abort(context, e)
        return runtime_pb2.CountTokensResponse(prompt_tokens=len(tokens))

    # -- encoders ---------------------------------------------------------------------------

    async def Embed(self, request: runtime_pb2.EmbedRequest, context) -> runtime_pb2.EmbedResponse:
        try:
            self._require(run_spec_pb2.MODE_EMBEDDINGS)
            if not request.inputs:
                raise InvalidArgument("input must not be empty", param="input")
            async with self.lock:
                self.in_flight += 1
                try:
                    started = time.perf_counter_ns()
                    vectors, tokens = await self._on_thread(self._embed, list(request.inputs),
                                                            request.truncate if request.HasField("truncate") else True)
                finally:
                    self.in_flight -= 1
            dims = request.dimensions
            if dims and dims > len(vectors[0]):
                raise InvalidArgument(f"dimensions must be at most {len(vectors[0])} for this model",
                                      param="dimensions")
        except OmgError as e:
            await _abort(context, e)
        out = runtime_pb2.EmbedResponse(usage=runtime_pb2.Usage(prompt_tokens=tokens),
                                        timings=runtime_pb2.Timings(prompt_eval_ns=time.perf_counter_ns() - started))
        for v in vectors:
            values = v[:dims] if dims else v
            if request.normalize:  # after any shortening to `dimensions` (Matryoshka style)
                norm = math.sqrt(sum(x * x for x in values)) or 1.0
                values = [x / norm for x in values]
            out.embeddings.add(values=values)
        return out

    def _token_counts(self, texts: list[str], truncate: bool, *, pairs: list[str] | None = None) -> int:
        """Tokens the model reads of `texts` (with `pairs`, of each query-document pair), at most
        the window each; raises InvalidArgument for an input over it when truncate is false."""
        enc = self.tokenizer(texts, pairs, truncation=False, add_special_tokens=True)["input_ids"]
        total = 0
        for i, ids in enumerate(enc):
            if len(ids) > self.window and not truncate:
                raise InvalidArgument(f"input {i} has {len(ids)} tokens, more than this model's limit of "
                                      f"{self.window}; shorten it or allow truncation", param="input")
            total += min(len(ids), self.window)
        return total

    def _embed(self, inputs: list[str], truncate: bool) -> tuple[list[list[float]], int]:
        """(On the torch thread.) One vector per input and the tokens read."""
        import torch

        tokens = self._token_counts(inputs, truncate)
        if hasattr(self.model, "encode") and hasattr(self.model, "max_seq_length"):  # sentence-transformers
            array = self.model.encode(inputs, batch_size=_BATCH, convert_to_numpy=True, show_progress_bar=False)
            return [row.tolist() for row in array], tokens
        vectors: list[list[float]] = []
        with torch.inference_mode():
            for i in range(0, len(inputs), _BATCH):
                enc = self.tokenizer(inputs[i:i + _BATCH], padding=True, truncation=True, max_length=self.window,
                                     return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # mean over real tokens
                vectors += pooled.cpu().tolist()
        return vectors, tokens

    async def Rerank(self, request: runtime_pb2.RerankRequest, context) -> runtime_pb2.RerankResponse:
        try:
            self._require(run_spec_pb2.MODE_RERANK)
            if not request.query or not request.documents:
                raise InvalidArgument("a query and at least one document are needed", param="documents")
            async with self.lock:
                self.in_flight += 1
                try:
                    scores, tokens = await self._on_thread(self._rerank, request.query, list(request.documents))
                finally:
                    self.in_flight -= 1
        except OmgError as e:
            await _abort(context, e)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # best first; ties keep input order
        if request.top_n:
            order = order[:request.top_n]
        return runtime_pb2.RerankResponse(
            results=[runtime_pb2.RerankResult(index=i, relevance_score=scores[i]) for i in order],
            usage=runtime_pb2.Usage(prompt_tokens=tokens))

    def _rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """(On the torch thread.) The relevance of each document to the query: the sigmoid of
        the cross-encoder's logit (of its last label's for a model with several), pairs cut to
        the window with the document giving way first."""
        import torch

        tokens = self._token_counts([query] * len(documents), True, pairs=documents)
        scores: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(documents), _BATCH):
                docs = documents[i:i + _BATCH]
                enc = self.tokenizer([query] * len(docs), docs, padding=True, truncation="longest_first",
                                     max_length=self.window, return_tensors="pt").to(self.device)
                logits = self.model(**enc).logits.float()
                scores += torch.sigmoid(logits[:, -1]).cpu().tolist()
        return scores, tokens


def _free_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _final_chat(result: GenerationResult) -> runtime_pb2.ChatResponse:
    return runtime_pb2.ChatResponse(
        finish_reason=result.finish_reason,
        usage=runtime_pb2.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
        timings=runtime_pb2.Timings(prompt_eval_ns=result.prompt_eval_ns, eval_ns=result.eval_ns),
        stop_sequence=result.stop_sequence,
    )


def main() -> None:
    run_worker(TransformersRuntime)


if __name__ == "__main__":
    main()
