"""The batching engine (runtimes/llamacpp/engine.py) driven in-process on real llama.cpp and the
real SmolLM2 GGUF: what the worker's gRPC tests cannot see from outside (which sequence a job
took, the isolated path an offloaded model uses for seeded requests, a cancellation mid-prompt)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.generation import GenerationResult, Sampling
from ohmygpu.runtimes.llamacpp.engine import BatchEngine, Job, REUSE_SHARE, _reuse_share, common_prefix
from ohmygpu.runtimes.llamacpp.loading import open_model

pytestmark = pytest.mark.slow


class Run:
    """One submitted job: its text pieces and how it ended."""

    def __init__(self, engine: BatchEngine, prompt: list[int], window: int = 1024, **sampling: object) -> None:
        self.pieces: list[str] = []
        self.done = threading.Event()
        self.outcome: GenerationResult | BaseException | None = None
        self.job = Job(prompt=prompt, sampling=Sampling(**sampling), grammar=None, window=window,  # type: ignore[arg-type]
                       emit=self.pieces.append, finish=self._finish)
        engine.submit(self.job)

    def _finish(self, outcome: GenerationResult | BaseException) -> None:
        self.outcome = outcome
        self.done.set()

    def result(self) -> tuple[str, GenerationResult]:
        assert self.done.wait(120)
        assert isinstance(self.outcome, GenerationResult), self.outcome
        return "".join(self.pieces), self.outcome


@pytest.fixture(scope="module")
def llm(gguf_path: Path):
    from llama_cpp import llama as llama_module

    # open_model turns off llama-cpp-python's own chat-template handlers (the worker renders
    # templates itself); in this shared test process, other tests' Llama() still want them.
    saved = llama_module.llama_chat_format.Jinja2ChatFormatter
    try:
        model = open_model(str(gguf_path), 32, 0, False, 2)
    finally:
        llama_module.llama_chat_format.Jinja2ChatFormatter = saved
    yield model
    model.close()


def _engine(llm, **kw) -> Iterator[BatchEngine]:
    engine = BatchEngine(llm, sequences=kw.pop("sequences", 4), window=1024, threads=2, **kw)
    engine.start()
    yield engine
    engine.close()


@pytest.fixture
def engine(llm) -> Iterator[BatchEngine]:
    yield from _engine(llm)


@pytest.fixture
def isolating(llm) -> Iterator[BatchEngine]:
    yield from _engine(llm, isolate_seeded=True)


def _prompt(llm, user: str, system: str = "You are a helpful assistant.") -> list[int]:
    text = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([5, 6], [5, 6, 7]) == 2
    conversation = list(range(100))
    assert _reuse_share(conversation, [*conversation, 7]) > 0.99  # its next turn
    assert _reuse_share(conversation, list(range(60))) == 1.0  # the same prompt again
    assert _reuse_share(conversation, [0, 1, 2, *range(200, 230)]) < REUSE_SHARE  # markup only
    assert _reuse_share([], [1, 2]) == 0.0


def test_a_job_goes_to_the_sequence_holding_its_prefix(engine: BatchEngine, llm) -> None:
    a, b = _prompt(llm, "Name a fruit."), _prompt(llm, "Name a colour.", system="You speak French.")
    Run(engine, a, temperature=0, max_tokens=6).result()
    Run(engine, b, temperature=0, max_tokens=6).result()
    # A follow-up of `a` finds a's cache, though `b` ran since: only the new tokens are evaluated.
    follow = a + llm.tokenize(b"Banana<|im_end|>\n<|im_start|>user\nAnother?", add_bos=False, special=True)
    _, result = Run(engine, follow, temperature=0, max_tokens=6).result()
    assert result.cached_tokens >= len(a) and result.prompt_tokens == len(follow)
    # The exact same prompt again reuses all but its last token (whose logits start the answer).
    _, again = Run(engine, follow, temperature=0, max_tokens=6).result()
    assert again.cached_tokens == len(follow) - 1


def test_isolated_seeded_jobs_evaluate_from_scratch_and_match_however_batched(isolating: BatchEngine, llm) -> None:
    # The path an offloaded model takes: a seeded job never reuses a prefix and decodes alone.
    prompt = _prompt(llm, "Tell me about the sea.")
    alone, first = Run(isolating, prompt, temperature=1.0, seed=9, max_tokens=40).result()
    again, second = Run(isolating, prompt, temperature=1.0, seed=9, max_tokens=40).result()
    assert first.cached_tokens == 0 and second.cached_tokens == 0 and again == alone
    others = [Run(isolating, _prompt(llm, f"Write about {i}."), temperature=0.8, max_tokens=60) for i in range(3)]
    beside, _ = Run(isolating, prompt, temperature=1.0, seed=9, max_tokens=40).result()
    for run in others:
        run.result()
    assert beside == alone
    # Unseeded jobs still reuse prefixes on the isolating engine.
    Run(isolating, prompt, temperature=0, max_tokens=4).result()
    _, unseeded = Run(isolating, prompt, temperature=0, max_tokens=4).result()
    assert unseeded.cached_tokens == len(prompt) - 1


def test_cancel_mid_prompt_and_while_waiting(engine: BatchEngine, llm) -> None:
    long_prompt = _prompt(llm, "Summarise this. " + "The tide comes in and goes out. " * 90)
    runs = [Run(engine, long_prompt, temperature=0, max_tokens=200) for _ in range(4)]
    waiting = Run(engine, _prompt(llm, "hi"), temperature=0, max_tokens=4)  # a fifth: no sequence free
    waiting.job.cancelled.set()
    for run in runs:
        run.job.cancelled.set()
    for run in [*runs, waiting]:
        _, result = run.result()
        assert result.finish_reason == runtime_pb2.FINISH_REASON_CANCELLED
    assert engine.busy() == 0
    # The engine serves on, and the cache of the cancelled prompt's evaluated part is reusable.
    text, result = Run(engine, _prompt(llm, "Say hello."), temperature=0, max_tokens=8).result()
    assert text and result.completion_tokens > 0


def test_a_request_longer_than_its_budget_ends_with_length(engine: BatchEngine, llm) -> None:
    prompt = _prompt(llm, "Count to one hundred.")
    _, result = Run(engine, prompt, window=len(prompt) + 3, temperature=0).result()
    assert result.finish_reason == runtime_pb2.FINISH_REASON_LENGTH and result.completion_tokens == 3


def test_close_ends_what_runs(llm) -> None:
    engine = BatchEngine(llm, sequences=2, window=1024, threads=2)
    engine.start()
    run = Run(engine, _prompt(llm, "Write a long essay about the ocean."), temperature=0, max_tokens=500)
    while not run.pieces:
        run.done.wait(0.01)
    engine.close()
    _, result = run.result()
    assert result.finish_reason == runtime_pb2.FINISH_REASON_CANCELLED
    with pytest.raises(RuntimeError, match="unloaded"):
        engine.submit(run.job)
