"""The per-token loop: llama.cpp's sampler and decoder, our detokenizer, stop sequences,
cancellation and timings.

It runs in a thread (llama.cpp blocks) and hands each text piece to the event loop. It does
not use `create_completion(stream=True)`, which re-detokenizes the whole completion on every
token; here each token is detokenized once and decoded incrementally, so Python work per token
stays constant.
"""

from __future__ import annotations

import codecs
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2


@dataclass
class GenerationResult:
    """What a finished generation reports."""

    finish_reason: int = runtime_pb2.FINISH_REASON_STOP
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


@dataclass
class Sampling:
    """llama.cpp sampler arguments from SamplingParams, with llama.cpp's defaults."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    max_tokens: int | None = None

    @classmethod
    def from_params(cls, p: run_spec_pb2.SamplingParams) -> Sampling:
        s = cls()
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty",
                     "presence_penalty", "frequency_penalty", "seed", "max_tokens"):
            if p.HasField(name):
                setattr(s, name, getattr(p, name))
        s.stop = [x for x in p.stop if x]
        return s


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop sequence."""
    held = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:i]):
                held = i
                break
    return held


def generate(
    llm: Any,
    prompt_tokens: list[int],
    sampling: Sampling,
    *,
    grammar: Any | None,
    emit: Callable[[str], None],
    cancelled: threading.Event,
    n_ctx: int | None = None,
) -> GenerationResult:
    """Generate until end of turn, a stop sequence, max_tokens, the context end or cancellation.

    `emit` receives text pieces in order (never a piece of a stop sequence). `n_ctx` is the
    request's window (prompt and answer together), at most the context's.
    """
    import llama_cpp

    result = GenerationResult(prompt_tokens=len(prompt_tokens))
    n_ctx = min(n_ctx or llm.n_ctx(), llm.n_ctx())  # a request may ask for less (num_ctx)
    budget = n_ctx - len(prompt_tokens)
    if sampling.max_tokens is not None and sampling.max_tokens > 0:
        budget = min(budget, sampling.max_tokens)
    if sampling.seed is not None:
        llm.set_seed(sampling.seed)
        # Reusing a cached prefix evaluates the rest in a different batch shape, which shifts
        # logits slightly; a seeded request evaluates its whole prompt so it is reproducible.
        llm.reset()
    else:
        llm.set_seed(random.randint(0, 2**31 - 1))  # unseeded requests must differ
    vocab = llm._model.vocab
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    stops = sampling.stop
    pending = ""  # decoded text not yet emitted, held while it may begin a stop sequence
    start = time.perf_counter_ns()
    first_token_at = 0
    result.finish_reason = runtime_pb2.FINISH_REASON_LENGTH
    if budget <= 0:
        return result
    for token in llm.generate(
        prompt_tokens,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        min_p=sampling.min_p,
        temp=sampling.temperature,
        repeat_penalty=sampling.repeat_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        grammar=grammar,
    ):
        if not first_token_at:
            first_token_at = time.perf_counter_ns()
        if cancelled.is_set():
            result.finish_reason = runtime_pb2.FINISH_REASON_CANCELLED
            break
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            result.finish_reason = runtime_pb2.FINISH_REASON_STOP
            break
        result.completion_tokens += 1
        piece = decoder.decode(llm.detokenize([token]))
        if piece:
            if stops:
                pending += piece
                hit = min((pending.find(s) for s in stops if s in pending), default=-1)
                if hit >= 0:
                    if hit:
                        emit(pending[:hit])
                    pending = ""
                    result.finish_reason = runtime_pb2.FINISH_REASON_STOP
                    break
                keep = _held_back(pending, stops)
                if len(pending) > keep:
                    emit(pending[: len(pending) - keep])
                    pending = pending[len(pending) - keep :]
            else:
                emit(piece)
        if result.completion_tokens >= budget:
            break
    else:
        result.finish_reason = runtime_pb2.FINISH_REASON_STOP
    tail = decoder.decode(b"", final=True)
    if result.finish_reason != runtime_pb2.FINISH_REASON_STOP or not stops:
        pending += tail
    if pending and result.finish_reason != runtime_pb2.FINISH_REASON_CANCELLED:
        emit(pending)
    end = time.perf_counter_ns()
    first = first_token_at or end
    result.prompt_eval_ns = first - start
    result.eval_ns = end - first
    return result
