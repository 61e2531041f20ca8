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

# One thread: the engine's behaviour (which sequence, what answer) does not depend on the count,
# and in CI this process shares 2 cores with daemons' workers whose OpenMP threads spin at every
# barrier: two OpenMP teams on too few cores slowed these tests 5-50x (a job of 60 tokens took
# over 120 s). With one thread ggml runs no OpenMP team here.
THREADS = 1


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
        model = open_model(str(gguf_path), 32, 0, False, THREADS)
    finally:
        llama_module.llama_chat_format.Jinja2ChatFormatter = saved
    yield model
    model.close()


def _engine(llm, **kw) -> Iterator[BatchEngine]:
    engine = BatchEngine(llm, sequences=kw.pop("sequences", 4), window=1024, threads=THREADS, **kw)
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
    engine = BatchEngine(llm, sequences=2, window=1024, threads=THREADS)
    engine.start()
    run = Run(engine, _prompt(llm, "Write a long essay about the ocean."), temperature=0, max_tokens=500)
    while not run.pieces:
        run.done.wait(0.01)
    engine.close()
    _, result = run.result()
    assert result.finish_reason == runtime_pb2.FINISH_REASON_CANCELLED
    with pytest.raises(RuntimeError, match="unloaded"):
        engine.submit(run.job)


def test_running_sequences_are_moved_onto_consecutive_ids_without_changing_answers(engine: BatchEngine, llm) -> None:
    # llama.cpp decodes a split cache's streams in one pass only for consecutive ids (see the
    # engine's docstring). Four jobs on ids 0-3; the two in the middle end at once, leaving 0 and
    # 3 running: one is moved next to the other (a stream copy) and both answer exactly as alone.
    first, second = _prompt(llm, "Tell me about the sea."), _prompt(llm, "Describe a market.")
    alone = [Run(engine, p, temperature=1.0, seed=s, max_tokens=60).result()[0] for p, s in ((first, 5), (second, 6))]
    fresh = [_prompt(llm, f"Say {w}.", system="You answer in one word.") for w in ("yes", "no")]
    runs = [Run(engine, first, temperature=1.0, seed=5, max_tokens=60),
            Run(engine, fresh[0], temperature=0, max_tokens=1), Run(engine, fresh[1], temperature=0, max_tokens=1),
            Run(engine, second, temperature=1.0, seed=6, max_tokens=60)]
    seen: list[dict[int, int]] = []  # between steps: sequence id -> id() of the job on it
    while not (runs[0].done.is_set() or runs[3].done.is_set()):
        seen.append(engine.call(lambda: {s.seq_id: id(s.job) for s in engine._seqs if s.job is not None}).result())
    texts = [run.result()[0] for run in runs]
    assert [texts[0], texts[3]] == alone
    # Every snapshot (taken between steps, as a step decodes) has the running ids consecutive,
    # including those after the two short jobs ended beside the long ones.
    assert all(max(ids) - min(ids) + 1 == len(ids) for ids in seen if ids)
    longs = {id(runs[0].job), id(runs[3].job)}
    after = [ids for ids in seen if set(ids.values()) == longs]
    assert after, "the two long jobs were never seen running alone together"
    assert {frozenset(ids) for ids in after} <= {frozenset({0, 1}), frozenset({1, 2}), frozenset({2, 3})}
    # The stream a job left keeps a copy, and wherever the job ended its cache serves the next turn.
    _, again = Run(engine, second, temperature=0, max_tokens=2).result()
    assert again.cached_tokens == len(second) - 1


def test_a_new_job_takes_a_free_sequence_next_to_the_running_one(engine: BatchEngine, llm, monkeypatch) -> None:
    # Without a cache worth reusing, the least recently used free sequence would be chosen; a
    # neighbour of the running one is, so the two decode in one pass without a move. (Moves
    # are turned off here to see the choice itself.)
    monkeypatch.setattr(engine, "_compact", lambda: None)
    systems = ["You are a pirate.", "Speak like a robot.", "Answer in French.", "Reply in rhymes."]
    prompts = [_prompt(llm, "Tell me a long story.", system=system) for system in systems]
    for prompt in prompts:  # one at a time: sequences 0, 1, 2, 3, the least recently used first
        Run(engine, prompt, temperature=0, max_tokens=2).result()
    assert [s.cached[:len(p)] for s, p in zip(engine._seqs, prompts, strict=True)] == prompts
    long_run = Run(engine, prompts[3], temperature=0, max_tokens=300)  # its own cache: sequence 3
    while not long_run.pieces:
        long_run.done.wait(0.01)
    newcomer = Run(engine, _prompt(llm, "Name a bird.", system="You name things."), temperature=0, max_tokens=30)
    while not newcomer.pieces:
        newcomer.done.wait(0.01)
    ids = engine.call(lambda: {id(s.job): s.seq_id for s in engine._seqs if s.job is not None}).result()
    assert ids == {id(long_run.job): 3, id(newcomer.job): 2}  # not sequence 0, the least recently used
    long_run.job.cancelled.set()
    long_run.result()
    assert newcomer.result()[1].completion_tokens > 0
