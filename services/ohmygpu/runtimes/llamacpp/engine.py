"""One llama.cpp context serving many sequences: continuous batching with prompt-prefix reuse.

The design llama-server and every GPU server use. The loaded model has one context holding N
sequences (RunSpec max_concurrency = OMG_NUM_PARALLEL), each with its own window of the KV cache
(llama.cpp's split, non-unified cache: a sequence attends only to its own cells). One thread
owns the context and loops: each step puts every generating sequence's next token and as many
prompt tokens of newly admitted requests as the batch has room for (prompts are evaluated in
chunks within the same steps, so a long prompt never stalls the streams already running) into
one `llama_decode`, then samples each sequence with its own sampler chain (penalties, grammar,
top-k/top-p/min-p, temperature, seed). A lone request gets every thread; N requests share one
pass over the weights per step, which on a GPU costs little more than one.

llama.cpp puts the tokens of a split cache's streams into one micro-batch only for a run of
consecutive sequence ids in ascending order (`split_equal`, sequential): any other layout is
split into several micro-batches, each a whole pass over the weights. Measured on 2 cores, four
streams decoding in descending id order took 42-46 ms a step against 25 ms ascending, and two
streams on ids 0 and 3 ran no faster than one. So the batch is laid out by ascending id, a new
request takes a free sequence next to the running ones when no cache is worth reusing, and when
the running sequences are not one run (a reused cache elsewhere, a sequence that ended between
others) the engine moves them together (`_compact`: a stream copy, once, instead of an extra
pass over the weights at every step).

When a sequence's request ends, its KV cache is kept. A new request goes to the free sequence
whose cache holds the largest share of its prompt (a conversation's next turn finds its own
cache, a shared system prompt is reused) or, when none holds much of it, to the least recently
used one; only the rest of the prompt is evaluated.

Seeded requests must give the same answer however they are batched. On the CPU, ggml computes
each token's row on its own (a dot product per output element, a softmax per query row, masked
cells skipped), so a token's logits do not depend on what else is in the batch or on how the
prompt was chunked: seeded requests batch and reuse prefixes like any other
(tests/contract/test_runtime_llamacpp.py checks this bit for bit). GPU kernels are chosen by
batch size and round differently, so where layers are offloaded a seeded sequence is decoded
in steps of its own, from an empty sequence, in fixed chunks (`isolate_seeded`).

All llama.cpp calls on the context run on the engine's one thread: ggml's OpenMP keeps a thread
team per calling thread, and calls from changing threads pile up teams that spin against each
other (measured: ~105 -> ~37 tokens/s). They go through the low-level module `llama_cpp.llama_cpp`,
looked up per call, where the worker-hardening tests plant a library that traps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ctypes
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.generation import GenerationResult, Sampling, TextOutput
from ohmygpu.runtimes.llamacpp import selftest

log = logging.getLogger("ohmygpu.worker.llamacpp")

PENALTY_LAST_N = 64  # llama.cpp's default window for repeat/presence/frequency penalties


@dataclass
class Job:
    """One request's generation, handed to the engine. `emit` and `finish` are called on the
    engine's thread; `finish` gets the result or the exception that ended it."""

    prompt: list[int]
    sampling: Sampling
    grammar: str | None  # GBNF, already parsed once by llama.cpp (grammar.py)
    window: int  # prompt and answer together, at most the sequence's window
    emit: Callable[[str], None]
    finish: Callable[[GenerationResult | BaseException], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Log probabilities: -1 none, else each generated token's with this many alternatives,
    # handed to `on_logprob` (on the engine's thread) before the token's text is emitted.
    logprobs: int = -1
    on_logprob: Callable[[runtime_pb2.TokenLogprob], None] | None = None


class _Sequence:
    """A sequence id of the context: what its KV cache holds, and the job running on it."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cached: list[int] = []  # tokens whose KV is in the cache, at positions 0..len-1
        self.last_used = 0.0
        self.job: Job | None = None
        self.todo: list[int] = []  # prompt tokens still to evaluate
        self.next_token: int | None = None  # sampled, to be decoded in the next step
        self.sampler: Any = None
        self.output: TextOutput | None = None
        self.result = GenerationResult()
        self.budget = 0
        self.started_ns = 0
        self.first_ns = 0
        self.isolated = False
        self.admitted = 0  # admission order: prompts are evaluated first come, first served


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


REUSE_SHARE = 0.5  # a cache must hold at least this share of a prompt to be taken over LRU


def _reuse_share(cached: list[int], prompt: list[int]) -> float:
    """The share of `prompt` that the sequence holding `cached` need not evaluate again. A
    conversation's next turn or a regenerated answer scores near 1, a long shared system prompt
    high; a prompt sharing only a few tokens of markup with another conversation scores low, and
    taking that sequence would throw its cache away for nothing."""
    return common_prefix(cached, prompt) / max(1, len(prompt))


class BatchEngine:
    """The context, its sequences and the thread that steps them."""

    def __init__(self, llm: Any, *, sequences: int, window: int, threads: int,
                 n_batch: int = 512, isolate_seeded: bool = False) -> None:
        self.llm = llm  # the llama_cpp.Llama that owns the weights (its own context is tiny)
        self.n_seq = max(1, sequences)
        self.requested_window = window
        self.threads = threads
        self.n_batch = n_batch
        self.isolate_seeded = isolate_seeded
        self.window = 0  # set on the thread: the per-sequence window llama.cpp gave
        self._ctx: Any = None
        self._batch: Any = None
        from llama_cpp import llama_cpp as lib

        self._lib = lib  # functions looked up per call (see the module's docstring)
        self._vocab = llm._model.vocab
        self._seqs = [_Sequence(i) for i in range(self.n_seq)]
        self._waiting: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._admissions = 0
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="llama-engine", daemon=True)

    # -- the caller's side (any thread) ----------------------------------------------------

    def start(self) -> None:
        """Creates the context on the engine thread; raises what llama.cpp raised."""
        self._thread.start()
        self._ready.result()

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stopping:
                raise RuntimeError("the model is being unloaded")
            self._waiting.append(job)
            self._cv.notify()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Runs fn() on the engine thread between steps (the context is not reentrant)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cv:
            self._calls.append((fn, fut))
            self._cv.notify()
        return fut

    def busy(self) -> int:
        """Requests running or waiting for a sequence."""
        with self._cv:
            return len(self._waiting) + sum(1 for s in self._seqs if s.job is not None)

    def close(self) -> None:
        """Cancels what runs, frees the context; the Llama (weights) is the caller's to close."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join()

    # -- the engine thread -------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._open()
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._ready.set_exception(e)
            return
        self._ready.set_result(None)
        try:
            self._loop()
        finally:
            self._shutdown()

    def _open(self) -> None:
        params = self._lib.llama_context_default_params()
        params.n_ctx = self.requested_window * self.n_seq
        params.n_seq_max = self.n_seq
        params.kv_unified = False  # each sequence its own stream: no attention over others' cells
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_threads = self.threads
        params.n_threads_batch = self.threads
        params.no_perf = True
        ctx = self._lib.llama_init_from_model(self.llm._model.model, params)
        if not ctx:
            raise RuntimeError("llama.cpp could not create a context of "
                               f"{self.n_seq} x {self.requested_window} tokens")
        self._ctx = ctx
        apply_lora(self._lib, self.llm, ctx)
        self._mem = self._lib.llama_get_memory(ctx)
        self._batch = self._lib.llama_batch_init(self.n_batch, 0, 1)
        self.window = min(self.requested_window, int(self._lib.llama_n_ctx_seq(ctx)))
        self._piece = ctypes.create_string_buffer(256)

    def _shutdown(self) -> None:
        with self._cv:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for job in waiting:
            job.finish(RuntimeError("the model was unloaded"))
        for seq in self._seqs:
            if seq.job is not None:
                self._end(seq, runtime_pb2.FINISH_REASON_CANCELLED)
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None

    def _loop(self) -> None:
        while True:
            with self._cv:
                while (not self._stopping and not self._calls and not self._waiting
                       and not any(s.job is not None for s in self._seqs)):
                    self._cv.wait()
                if self._stopping:
                    return
                calls, self._calls = list(self._calls), collections.deque()
            self._admit()
            self._drop_cancelled()
            self._compact()
            for fn, fut in calls:  # they see the sequences as the step will
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        fut.set_exception(e)
            if any(s.job is not None for s in self._seqs):
                try:
                    self._step()
                except Exception as e:  # noqa: BLE001 - a failed step ends its requests, not the worker
                    log.error("decode step failed: %s", e)
                    for seq in self._seqs:
                        if seq.job is not None:
                            self._forget(seq)
                            self._fail(seq, e)

    # -- admission: a waiting job gets a free sequence, reusing the longest cached prefix ----

    def _admit(self) -> None:
        while True:
            with self._cv:
                if not self._waiting:
                    return
                free = [s for s in self._seqs if s.job is None]
                if not free:
                    return
                job = self._waiting.popleft()
            if job.cancelled.is_set():
                job.finish(GenerationResult(finish_reason=runtime_pb2.FINISH_REASON_CANCELLED,
                                            prompt_tokens=len(job.prompt)))
                continue
            try:
                self._start(job, free)
            except Exception as e:  # noqa: BLE001 - this job fails; the others run on
                job.finish(e)

    def _start(self, job: Job, free: list[_Sequence]) -> None:
        isolated = self.isolate_seeded and job.sampling.seed is not None
        if isolated:
            # Fixed chunks from position 0: no reuse, whose split depends on what ran before.
            seq = min(free, key=lambda s: s.last_used)
            keep = 0
        else:
            # The cache that serves this prompt best; when none holds much of it, the least
            # recently used (the conversation least likely to come back).
            # Among those, one next to the running sequences (see the module's docstring).
            running = self._shared_running()

            def worth(s: _Sequence) -> tuple[float, int, float]:
                share = _reuse_share(s.cached, job.prompt)
                neighbours = (s.seq_id - 1 in running) + (s.seq_id + 1 in running)
                return (share if share >= REUSE_SHARE else 0.0, neighbours, -s.last_used)

            seq = max(free, key=worth)
            # At least the last prompt token is evaluated again: its logits give the first token.
            keep = min(common_prefix(seq.cached, job.prompt), len(job.prompt) - 1)
        if not self._lib.llama_memory_seq_rm(self._mem, seq.seq_id, keep, -1):
            keep = 0
            self._lib.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        seq.cached = job.prompt[:keep]
        seq.todo = job.prompt[keep:]
        seq.next_token = None
        seq.isolated = isolated
        seq.sampler = self._sampler(job)
        seq.output = TextOutput(job.sampling.stop, job.emit)
        seq.result = GenerationResult(prompt_tokens=len(job.prompt), cached_tokens=keep,
                                      finish_reason=runtime_pb2.FINISH_REASON_LENGTH)
        budget = job.window - len(job.prompt)
        if job.sampling.max_tokens is not None and job.sampling.max_tokens > 0:
            budget = min(budget, job.sampling.max_tokens)
        seq.budget = budget
        seq.started_ns = time.perf_counter_ns()
        seq.first_ns = 0
        self._admissions += 1
        seq.admitted = self._admissions
        seq.job = job
        if budget <= 0:
            self._end(seq, runtime_pb2.FINISH_REASON_LENGTH)
            return
        if job.sampling.penalised:
            # Penalties count the prompt's last tokens too, as llama-server does.
            penalties = self._lib.llama_sampler_chain_get(seq.sampler, 0)
            for token in job.prompt[-PENALTY_LAST_N:]:
                self._lib.llama_sampler_accept(penalties, token)

    def _sampler(self, job: Job) -> Any:
        """The job's own chain, in llama-cpp-python's order: penalties, grammar, top-k, top-p,
        min-p, temperature, then a draw seeded per request."""
        s = job.sampling
        chain = self._lib.llama_sampler_chain_init(self._lib.llama_sampler_chain_default_params())
        add = self._lib.llama_sampler_chain_add
        if s.penalised:
            add(chain, self._lib.llama_sampler_init_penalties(
                self.llm.n_vocab(), PENALTY_LAST_N, s.repeat_penalty, s.frequency_penalty, s.presence_penalty))
        if job.grammar is not None:
            grammar = self._lib.llama_sampler_init_grammar(self._vocab, job.grammar.encode("utf-8"), b"root")
            if not grammar:  # grammar.py parsed it already; a NULL here would crash the next token
                self._lib.llama_sampler_free(chain)
                raise RuntimeError("llama.cpp refused the output grammar")
            add(chain, grammar)
        if s.temperature <= 0:
            add(chain, self._lib.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, self._lib.llama_sampler_init_top_k(s.top_k))
        add(chain, self._lib.llama_sampler_init_top_p(s.top_p, 1))
        add(chain, self._lib.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, self._lib.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else random.randint(0, 2**31 - 1)  # unseeded ones differ
        add(chain, self._lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # -- keeping the running sequences on consecutive ids -----------------------------------

    def _shared_running(self) -> set[int]:
        return {s.seq_id for s in self._seqs if s.job is not None and not s.isolated}

    def _compact(self) -> None:
        """Moves running sequences so that those decoded together hold consecutive ids: the
        window of ids that already holds most of them, overwriting the least recently used free
        caches. A move copies the sequence's stream (llama.cpp does it at the next decode, before
        the batch) and swaps the two sequences' ids; the stream left behind keeps its copy."""
        running = sorted(self._shared_running())
        k = len(running)
        if k < 2 or running[-1] - running[0] + 1 == k:
            return
        by_id = {s.seq_id: s for s in self._seqs}
        best: tuple[int, float, int] | None = None
        for start in range(0, self.n_seq - k + 1):
            ids = range(start, start + k)
            if any(by_id[i].job is not None and by_id[i].isolated for i in ids):
                continue
            free = [by_id[i] for i in ids if by_id[i].job is None]
            key = (len(free), max((f.last_used for f in free), default=0.0), start)
            if best is None or key < best:
                best = key
        if best is None:  # isolated sequences leave no window: decode in several passes
            return
        window = range(best[2], best[2] + k)
        movers = [by_id[i] for i in running if i not in window]
        targets = [by_id[i] for i in window if by_id[i].job is None]
        for mover, target in zip(movers, targets, strict=True):
            self._lib.llama_memory_seq_cp(self._mem, mover.seq_id, target.seq_id, -1, -1)
            mover.seq_id, target.seq_id = target.seq_id, mover.seq_id
            target.cached = list(mover.cached)
            target.last_used = 0.0  # a copy of a running sequence's prefix: the first to recycle
        self._seqs.sort(key=lambda s: s.seq_id)

    # -- one step: one llama_decode for all shared sequences (isolated ones in their own) ----

    def _drop_cancelled(self) -> None:
        for seq in self._seqs:
            if seq.job is not None and seq.job.cancelled.is_set():
                self._end(seq, runtime_pb2.FINISH_REASON_CANCELLED)

    def _step(self) -> None:
        running = sorted((s for s in self._seqs if s.job is not None), key=lambda s: s.seq_id)
        shared = [s for s in running if not s.isolated]
        groups = ([shared] if shared else []) + [[s] for s in running if s.isolated]
        for group in groups:
            self._decode(group)

    def _decode(self, group: list[_Sequence]) -> None:
        batch = self._batch
        n = 0
        outputs: list[tuple[_Sequence, int]] = []

        def add(seq: _Sequence, token: int, logits: bool) -> None:
            nonlocal n
            self._put(n, token, len(seq.cached), seq.seq_id, logits)
            seq.cached.append(token)
            if logits:
                outputs.append((seq, n))
            n += 1

        # What goes in: every generating sequence's next token, then prompt chunks, first come
        # first served, in the room left; laid out by ascending sequence id (`group`'s order).
        taken: dict[int, tuple[list[int], bool]] = {}
        room = self.n_batch
        for seq in group:
            if seq.next_token is not None:
                taken[seq.seq_id] = ([seq.next_token], True)
                seq.next_token = None
                room -= 1
        for seq in sorted(group, key=lambda s: s.admitted):
            if room <= 0:
                break
            if not seq.todo:
                continue
            chunk, seq.todo = seq.todo[:room], seq.todo[room:]
            taken[seq.seq_id] = (chunk, not seq.todo)
            room -= len(chunk)
        for seq in group:
            tokens, wants_logits = taken.get(seq.seq_id, ([], False))
            for i, token in enumerate(tokens):
                add(seq, token, wants_logits and i == len(tokens) - 1)
        if n == 0:
            return
        batch.n_tokens = n
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        now = time.perf_counter_ns()
        for seq, index in outputs:
            assert seq.job is not None
            # The model's distribution, read before the sampler chain (which works on a copy).
            logits = self._logits(index) if seq.job.logprobs >= 0 else None
            token = self._lib.llama_sampler_sample(seq.sampler, self._ctx, index)
            if not seq.first_ns:
                seq.first_ns = now
            self._on_token(seq, int(token), logits)

    def _logits(self, index: int) -> Any:
        """Batch output `index`'s logits as log probabilities (a numpy array over the vocabulary)."""
        import numpy as np

        row = np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, index), shape=(self.llm.n_vocab(),))
        peak = float(row.max())
        return row - (peak + float(np.log(np.exp(row - peak).sum())))

    def _token_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, True)
        return self._piece.raw[:n] if n > 0 else b""

    def _logprob(self, logprobs: Any, token: int, top: int) -> runtime_pb2.TokenLogprob:
        import numpy as np

        data = self._token_bytes(token)
        entry = runtime_pb2.TokenLogprob(token=data.decode("utf-8", "replace"), bytes=data,
                                         logprob=float(logprobs[token]))
        if top > 0:
            best = np.argpartition(-logprobs, top)[:top]
            for alt in best[np.argsort(-logprobs[best], kind="stable")]:
                alt_bytes = self._token_bytes(int(alt))
                entry.top_logprobs.add(token=alt_bytes.decode("utf-8", "replace"), bytes=alt_bytes,
                                       logprob=float(logprobs[alt]))
        return entry

    def _put(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        """Batch entry i: `token` at `pos` of sequence `seq_id`, with its logits when asked."""
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits

    def _on_token(self, seq: _Sequence, token: int, logprobs: Any = None) -> None:
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._end(seq, runtime_pb2.FINISH_REASON_STOP)
            return
        seq.result.completion_tokens += 1
        job = seq.job
        if logprobs is not None and job is not None and job.on_logprob is not None:
            job.on_logprob(self._logprob(logprobs, token, job.logprobs))
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        assert seq.output is not None
        if n > 0 and seq.output.feed(self._piece.raw[:n]):
            self._end(seq, runtime_pb2.FINISH_REASON_STOP, stopped=True)
        elif seq.result.completion_tokens >= seq.budget:
            self._end(seq, runtime_pb2.FINISH_REASON_LENGTH)
        else:
            seq.next_token = token

    def _end(self, seq: _Sequence, reason: int, *, stopped: bool = False) -> None:
        job = seq.job
        assert job is not None and seq.output is not None
        result = seq.result
        result.finish_reason = reason
        result.stop_sequence = seq.output.matched if stopped else ""
        try:
            seq.output.close(reason, stopped=stopped)
        finally:
            end = time.perf_counter_ns()
            first = seq.first_ns or end
            result.prompt_eval_ns = first - seq.started_ns
            result.eval_ns = end - first
            self._release(seq)  # a prompt cancelled midway: the cache holds what was evaluated
            seq.last_used = time.monotonic()
        job.finish(result)

    def _fail(self, seq: _Sequence, error: BaseException) -> None:
        job = seq.job
        self._release(seq)
        if job is not None:
            job.finish(error)

    def _release(self, seq: _Sequence) -> None:
        """The sequence serves no job any more: its sampler is freed, its cache stays."""
        if seq.sampler is not None:
            self._lib.llama_sampler_free(seq.sampler)
            seq.sampler = None
        seq.job = None
        seq.todo = []
        seq.next_token = None

    def _forget(self, seq: _Sequence) -> None:
        """After a failed decode the sequence's cells are unknown: drop them."""
        self._lib.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        seq.cached = []

    # -- on the engine thread, via call() ------------------------------------------------------

    def check_batched_eval(self, tokens: int) -> tuple[int, float]:
        """The load self-test (selftest.py): `tokens` tokens in batches on every thread, in
        sequence 0, which is then cleared. Call through call()."""
        n = max(2, min(tokens, self.window - 1))
        ids = selftest.spread_ids(n, self.llm.n_vocab())
        seq = self._seqs[0]
        started = time.perf_counter()
        try:
            for start in range(0, n, self.n_batch):
                chunk = ids[start:start + self.n_batch]
                for i, token in enumerate(chunk):
                    self._put(i, token, start + i, 0, i == len(chunk) - 1)
                self._batch.n_tokens = len(chunk)
                rc = self._lib.llama_decode(self._ctx, self._batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc} in the self-test")
        finally:
            self._forget(seq)
        return n, time.perf_counter() - started


def apply_lora(lib: Any, llm: Any, ctx: Any) -> None:
    """Apply the LoRA adapter the Llama was opened with (lora_path) to context `ctx` too:
    llama-cpp-python sets it on the Llama's own context only, and the engine decodes in its own."""
    adapter = getattr(llm, "_lora_adapter", None)
    if adapter is None:
        return
    adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(float(getattr(llm, "lora_scale", 1.0)))
    if lib.llama_set_adapters_lora(ctx, adapters, 1, scales):
        raise RuntimeError("llama.cpp could not apply the LoRA adapter to the context")
