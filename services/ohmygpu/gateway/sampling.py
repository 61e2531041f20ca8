"""Sampling parameters from a dialect's JSON, parsed once for OpenAI, Ollama and Anthropic.

Each dialect names the same SamplingParams fields its own way (OpenAI: top-level
`max_completion_tokens` or `max_tokens`; Ollama: `options.num_predict`, where -1 and -2 mean
"until done"; Anthropic: `max_tokens`, and `stop_sequences` for the stops). The names differ;
the bounds do not: every value is checked against core/sampling.py's one table, and a refusal
names the field as the client sent it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ohmygpu.core import sampling
from ohmygpu.gateway.body import Fields
from ohmygpu.run.v1 import run_spec_pb2


@dataclass(frozen=True)
class Name:
    """One JSON name of a SamplingParams field. `unset` values mean "the default" (Ollama's
    num_predict -1 and -2) and are accepted below the field's bound."""

    json: str
    field: str
    unset: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Dialect:
    """A dialect's names, in the order read: for a field named twice, the first one present wins
    (OpenAI's max_completion_tokens over its older max_tokens) and the later is not read."""

    names: tuple[Name, ...]
    stop: str = "stop"  # the JSON name of the stop sequences


_SHARED = tuple(Name(key, key) for key in ("temperature", "top_p", "min_p", "repeat_penalty",
                                          "presence_penalty", "frequency_penalty", "top_k", "seed"))
# top_k, min_p and repeat_penalty are not OpenAI's, but llama.cpp's server and LM Studio take
# them at the top level and clients send them.
OPENAI = Dialect((*_SHARED, Name("max_completion_tokens", "max_tokens"), Name("max_tokens", "max_tokens")))
OLLAMA = Dialect((*_SHARED, Name("num_predict", "max_tokens", unset=frozenset({-1, -2}))))
# Anthropic's Messages API has these four and no others (its max_tokens is required: anthropic.py).
ANTHROPIC = Dialect(tuple(Name(key, key) for key in ("temperature", "top_p", "top_k", "max_tokens")),
                    stop="stop_sequences")


def parse_sampling(f: Fields, dialect: Dialect, *, max_tokens_limit: int,
                   default_max_tokens: int | None = None) -> run_spec_pb2.SamplingParams:
    """`f`'s sampling fields as SamplingParams; raises InvalidArgument naming the dialect's
    field (with `f`'s prefix: "options.temperature") for a wrong type or a value out of bounds."""
    p = run_spec_pb2.SamplingParams()
    for name in dialect.names:
        if p.HasField(name.field):
            continue
        bound = sampling.BOUNDS[name.field]
        lo, hi = sampling.bounds(name.field, max_tokens_limit)
        if bound.integer:
            value = f.int(name.json, min((int(lo), *name.unset)), int(hi))
            if value is not None and value not in name.unset:
                setattr(p, name.field, value)
        else:
            number = f.number(name.json, lo, hi)
            if number is not None:
                setattr(p, name.field, number)
    if default_max_tokens is not None and not p.HasField("max_tokens"):
        p.max_tokens = default_max_tokens
    stops = f.stop(dialect.stop)
    sampling.check_stop_count(len(stops), f.prefix + dialect.stop)
    p.stop.extend(stops)
    return p
