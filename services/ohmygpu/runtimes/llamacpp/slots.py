"""Parallel slots of one loaded model: N llama.cpp contexts over the same weights.

Each slot is its own llama_context (KV cache, batch, sampler state) created on the model that
`Llama` already loaded, so weights exist once (in RAM or VRAM) and only the KV cache is per
slot. Each slot runs on its own dedicated thread: ggml's OpenMP keeps a thread team per calling
thread, and a fixed thread per context keeps those teams from piling up (see worker.py). The
CPU threads are shared out among the slots that are busy when a request starts, so one request
alone still gets them all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any


def threads_per_slot(threads: int, slots: int) -> int:
    """Each slot's share of the CPU threads (at least one)."""
    return max(1, threads // max(1, slots))


def fork_context(base: Any) -> Any:
    """A `Llama` sharing `base`'s model with a fresh context of the same parameters. Relies on
    llama-cpp-python's attributes (pinned in pyproject); close it before `base`."""
    import numpy as np
    from llama_cpp import _internals as internals

    # Not copy.copy: Llama's __getstate__/__setstate__ pickling support would load the model
    # again. A bare instance with base's attributes, then fresh per-context state.
    llm = object.__new__(type(base))
    llm.__dict__.update(base.__dict__)
    llm._stack = contextlib.ExitStack()
    llm._ctx = llm._stack.enter_context(contextlib.closing(
        internals.LlamaContext(model=base._model, params=base.context_params, verbose=False)))
    llm._batch = llm._stack.enter_context(contextlib.closing(
        internals.LlamaBatch(n_tokens=base.n_batch, embd=0, n_seq_max=base.context_params.n_ctx, verbose=False)))
    llm._candidates = internals.LlamaTokenDataArray(n_vocab=base._n_vocab)
    llm.n_tokens = 0
    llm._requires_eval = True
    llm.input_ids = np.ndarray(base.input_ids.shape, dtype=np.intc)
    llm.scores = np.ndarray(base.scores.shape, dtype=np.single)
    llm._mirostat_mu = ctypes.c_float(2.0 * 5.0)
    llm._sampler = None
    llm.cache = None
    # One token through the new context allocates its compute buffers now, not on a user's request.
    llm.eval([max(0, base.token_bos())])
    llm.reset()
    return llm


@dataclass
class Slot:
    """One context and the thread every call on it runs on."""

    index: int
    llm: Any
    executor: concurrent.futures.ThreadPoolExecutor

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class SlotPool:
    """The slots of the loaded model; requests take a free one or wait."""

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        # Last in, first out: a lone request gets the slot that ran last, whose caches are warm
        # and whose prompt prefix (a conversation's previous turn) is most likely still there.
        self._free: asyncio.LifoQueue[Slot] = asyncio.LifoQueue()
        for slot in slots:
            self._free.put_nowait(slot)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Slot]:
        """A free slot (waits for one)."""
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)

    async def drain(self) -> None:
        """Take every slot (waiting for requests in flight); the pool serves no one after."""
        for _ in self.slots:
            await self._free.get()

    def close(self) -> None:
        """Free every context, the base (slot 0, which owns the model) last."""
        for slot in reversed(self.slots):
            slot.executor.submit(slot.llm.close).result()
            slot.executor.shutdown(wait=True)


def make_executor(index: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-slot{index}")
