"""What one generated sequence owns besides its KV cache: sampling arguments, the text it has
produced (incremental UTF-8, stop sequences held back until they cannot match), and what it
reports when it ends. The batching loop that drives many of these is runtimes/llamacpp/engine.py.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field

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
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused, not evaluated
    stop_sequence: str = ""  # the stop sequence that ended the text, if one did


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

    @property
    def penalised(self) -> bool:
        return (self.repeat_penalty != 1.0 or self.presence_penalty != 0.0
                or self.frequency_penalty != 0.0)


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop sequence."""
    held = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:i]):
                held = i
                break
    return held


class TextOutput:
    """Bytes of token pieces in, text pieces out through `emit`, never a piece of a stop sequence.

    Each token is turned into bytes once and decoded incrementally, so the work per token stays
    constant however long the answer grows.
    """

    def __init__(self, stops: list[str], emit: Callable[[str], None]) -> None:
        self.stops = stops
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded, not yet emitted: it may begin a stop sequence
        self.matched = ""  # the stop sequence that ended the text (the first in it), once one has

    def feed(self, data: bytes) -> bool:
        """Adds a token's bytes; True when a stop sequence has ended the text."""
        piece = self.decoder.decode(data)
        if not piece:
            return False
        if not self.stops:
            self.emit(piece)
            return False
        self.pending += piece
        hit, self.matched = min(((self.pending.find(s), s) for s in self.stops if s in self.pending),
                                default=(-1, ""))
        if hit >= 0:
            if hit:
                self.emit(self.pending[:hit])
            self.pending = ""
            return True
        keep = _held_back(self.pending, self.stops)
        if len(self.pending) > keep:
            self.emit(self.pending[: len(self.pending) - keep])
            self.pending = self.pending[len(self.pending) - keep:]
        return False

    def close(self, finish_reason: int, *, stopped: bool) -> None:
        """Flushes what is held (nothing after a stop sequence or a cancellation)."""
        tail = self.decoder.decode(b"", final=True)
        if stopped or finish_reason == runtime_pb2.FINISH_REASON_CANCELLED:
            return
        text = self.pending + tail
        self.pending = ""
        if text:
            self.emit(text)
