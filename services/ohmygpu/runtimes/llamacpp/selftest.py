"""A worker proves its llama.cpp build runs on this CPU before it reports ready.

A llama.cpp compiled with -march=native on a CPU that advertises AMX traps (SIGILL) in ggml's
AMX kernels, but only in a multi-threaded evaluation of a batch of many tokens: a one-thread or
short-prompt test passes, and the first real chat kills the worker. So at load we evaluate a
batch of tokens with every thread the worker has (a few hundred where the build has AMX
kernels). A trap kills the worker here, where the daemon reads it as "this library cannot run
on this CPU" and marks the model failed once, instead of failing every request.
"""

from __future__ import annotations

import time
from typing import Any

# ggml's AMX kernels take any batch of more than one token, and the reported trap came with a
# ~400-token prompt: a build with AMX kernels is tested with a batch of that order. Any other
# build gets a short batch that still spreads over every thread (a few tenths of a second for
# a small model on 2 cores; a long one would cost seconds of every load of a big model on CPU).
AMX_TOKENS = 256
SMOKE_TOKENS = 64


def selftest_tokens() -> int:
    """How many tokens the self-test evaluates with the installed llama.cpp build."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace")
    return AMX_TOKENS if "AMX" in info else SMOKE_TOKENS


def spread_ids(n: int, vocab: int) -> list[int]:
    """n valid token ids spread over the vocabulary: the aim is the kernels, not the text, and a
    spread avoids a degenerate row."""
    return [(i * 7919 + 13) % vocab for i in range(n)]


def check_batched_eval(llm: Any, threads: int, *, tokens: int | None = None) -> tuple[int, float]:
    """Decode `tokens` tokens (default: selftest_tokens(); at most what the context holds)
    through `llm`'s context in batches of its n_batch, with `threads` threads, then clear the
    context. Returns (tokens, seconds). Raises RuntimeError when llama_decode fails; a library
    that traps kills the process, which the daemon reports."""
    n = max(2, min(tokens or selftest_tokens(), llm.n_ctx() - 1))
    ids = spread_ids(n, llm.n_vocab())
    ctx = llm._ctx
    normal = (llm.context_params.n_threads, llm.context_params.n_threads_batch)
    started = time.perf_counter()
    ctx.set_n_threads(threads, threads)
    try:
        llm.reset()
        ctx.kv_cache_clear()
        for start in range(0, n, llm.n_batch):
            batch = ids[start:start + llm.n_batch]
            llm._batch.set_batch(batch=batch, n_past=start, logits_all=False)
            ctx.decode(llm._batch)
    finally:
        ctx.set_n_threads(*normal)
        ctx.kv_cache_clear()
        llm.reset()
    return n, time.perf_counter() - started
