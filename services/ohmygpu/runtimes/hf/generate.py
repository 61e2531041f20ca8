"""One generation with a transformers causal LM: a manual decoding loop over the model's KV cache.

Manual rather than `model.generate`, so each step can check the request's cancellation, sample
with the same arguments and defaults as the llama.cpp worker (runtimes/api/generation.py's
`Sampling`: temperature, top_k, top_p, min_p, repeat/presence/frequency penalties, seed), hold
back text that may begin a stop sequence (the same `TextOutput`), and count tokens honestly. Runs
on the worker's one inference thread; `emit` is called with each text piece.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.generation import GenerationResult, Sampling, TextOutput

_PENALTY_WINDOW = 64  # llama.cpp's penalty_last_n: the tokens the penalties look at


class Detokenizer:
    """Token ids in, new text out: each step decodes only the last few tokens (a prefix and the
    new ones), and holds text back while it ends in a partial character, as TGI and vLLM do."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


def sample_next(logits: Any, s: Sampling, history: list[int], generated: dict[int, int], generator: Any) -> int:
    """The next token from the last position's logits (float32, 1-D), as llama.cpp's chain
    orders it: penalties, then greedy at temperature 0, else top-k, top-p, min-p, temperature."""
    import torch

    if s.penalised and history:
        recent = torch.tensor(sorted(set(history[-_PENALTY_WINDOW:])), device=logits.device)
        picked = logits[recent]
        if s.repeat_penalty != 1.0:
            picked = torch.where(picked > 0, picked / s.repeat_penalty, picked * s.repeat_penalty)
        logits = logits.clone()
        logits[recent] = picked
        if generated and (s.presence_penalty or s.frequency_penalty):
            ids = torch.tensor(list(generated), device=logits.device)
            counts = torch.tensor(list(generated.values()), device=logits.device, dtype=logits.dtype)
            logits[ids] -= s.presence_penalty + s.frequency_penalty * counts
    if s.temperature <= 0 or s.top_k == 1:
        return int(torch.argmax(logits))
    if s.top_k > 0:
        k = min(s.top_k, logits.numel())
        values, indices = torch.topk(logits, k)
    else:
        values, indices = torch.sort(logits, descending=True)
    probs = torch.softmax(values, dim=-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if 0 < s.top_p < 1:
        keep &= (torch.cumsum(probs, dim=-1) - probs) < s.top_p  # always keeps the first
    if s.min_p > 0:
        keep &= probs >= s.min_p * probs[0]
    values = values[keep]
    indices = indices[keep]
    probs = torch.softmax(values / s.temperature, dim=-1).to("cpu", torch.float32)
    choice = torch.multinomial(probs, 1, generator=generator)
    return int(indices[int(choice)])


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def generate(model: Any, tokenizer: Any, prompt: list[int], s: Sampling, *, window: int,
             eos: set[int], emit: Callable[[str], None], cancelled: threading.Event,
             device: str) -> GenerationResult:
    """Generate after `prompt` (token ids) until an end token, a stop sequence, max_tokens, the
    window, or `cancelled`; text pieces go to `emit`. Returns what happened and the counts."""
    import torch

    result = GenerationResult(prompt_tokens=len(prompt))
    room = window - len(prompt)
    limit = min(room, s.max_tokens) if s.max_tokens is not None and s.max_tokens >= 0 else room
    generator = torch.Generator(device="cpu")
    if s.seed is not None and s.seed >= 0:
        generator.manual_seed(s.seed & 0xFFFF_FFFF_FFFF_FFFF)
    else:
        generator.seed()
    output = TextOutput(s.stop, emit)
    detok = Detokenizer(tokenizer)
    history = list(prompt)
    generated: dict[int, int] = {}
    kwargs = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    stopped = False
    result.finish_reason = runtime_pb2.FINISH_REASON_LENGTH
    with torch.inference_mode():
        started = time.perf_counter_ns()
        out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, **kwargs)
        result.prompt_eval_ns = time.perf_counter_ns() - started
        started = time.perf_counter_ns()
        past = out.past_key_values
        logits = out.logits[0, -1].float()
        del out
        while result.completion_tokens < limit:
            if cancelled.is_set():
                result.finish_reason = runtime_pb2.FINISH_REASON_CANCELLED
                break
            token = sample_next(logits, s, history, generated, generator)
            if token in eos:
                result.finish_reason = runtime_pb2.FINISH_REASON_STOP
                break
            result.completion_tokens += 1
            history.append(token)
            generated[token] = generated.get(token, 0) + 1
            piece = detok.add(token)
            if piece and output.feed(piece.encode("utf-8")):
                stopped = True
                result.finish_reason = runtime_pb2.FINISH_REASON_STOP
                result.stop_sequence = output.matched
                break
            if result.completion_tokens >= limit:
                break
            out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=past, use_cache=True,
                        **kwargs)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            del out
        result.eval_ns = time.perf_counter_ns() - started
    output.close(result.finish_reason, stopped=stopped)
    return result


def end_tokens(model: Any, tokenizer: Any) -> set[int]:
    """Ids that end the model's turn: its generation config's eos_token_id (one or a list), and
    the tokenizer's eos token."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    value = getattr(config, "eos_token_id", None) if config is not None else None
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, int):
            ids.add(v)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    return ids
