"""The bounds of sampling parameters: one table for every way a request enters.

The HTTP dialects (gateway/sampling.py) read their own names for these fields (OpenAI's
`max_completion_tokens`, Ollama's `options.num_predict`) against this table and name the
dialect's field in a refusal; the daemon checks every request message against it again
(`check`), so a gRPC client meets the same bounds as an HTTP one.

Where OpenAI and Ollama once disagreed, the tighter sane bound won: temperature 0..2 (OpenAI's;
Ollama's side allowed 0..100) and presence/frequency penalty -2..2 (OpenAI's; Ollama's side
allowed -100..100). Sixteen stop sequences at most, as the daemon already refused more.
"""

from __future__ import annotations

from dataclasses import dataclass

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.run.v1 import run_spec_pb2

INT32_MAX = (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_STOP = 16


@dataclass(frozen=True)
class Bound:
    """The closed range of one SamplingParams field. `hi` None: the daemon's max_tokens_limit."""

    lo: float
    hi: float | None
    integer: bool = False


BOUNDS: dict[str, Bound] = {
    "temperature": Bound(0, 2),
    "top_p": Bound(0, 1),
    "min_p": Bound(0, 1),
    "repeat_penalty": Bound(0, 10),
    "presence_penalty": Bound(-2, 2),
    "frequency_penalty": Bound(-2, 2),
    "top_k": Bound(0, 1 << 20, integer=True),
    "seed": Bound(INT64_MIN, INT64_MAX, integer=True),
    "max_tokens": Bound(0, None, integer=True),
}


def bounds(field: str, max_tokens_limit: int) -> tuple[float, float]:
    """(lo, hi) of SamplingParams field `field`; max_tokens' upper bound is the setting,
    never past what the message's int32 holds."""
    b = BOUNDS[field]
    return b.lo, min(max_tokens_limit, INT32_MAX) if b.hi is None else b.hi


def check(params: run_spec_pb2.SamplingParams, *, max_tokens_limit: int) -> None:
    """Raise InvalidArgument (naming the field) for a parameter out of BOUNDS or too many stops."""
    for field, b in BOUNDS.items():
        if not params.HasField(field):
            continue
        lo, hi = bounds(field, max_tokens_limit)
        value = getattr(params, field)
        if not lo <= value <= hi:
            shown = f"{int(lo)} and {int(hi)}" if b.integer else f"{lo:g} and {hi:g}"
            raise InvalidArgument(f"'{field}' must be between {shown}", param=field)
    check_stop_count(len(params.stop), "stop")


def check_stop_count(count: int, param: str) -> None:
    if count > MAX_STOP:
        raise InvalidArgument(f"'{param}' holds {count} stop sequences; at most {MAX_STOP}", param=param)


MAX_TOP_LOGPROBS = 20  # OpenAI's bound on alternatives per token


def check_logprobs(logprobs: bool, top_logprobs: int) -> None:
    """top_logprobs within its bound, and only with logprobs (as OpenAI refuses it); raises
    InvalidArgument. The daemon checks before any queue, the llama.cpp worker again."""
    if top_logprobs > MAX_TOP_LOGPROBS:
        raise InvalidArgument(f"'top_logprobs' must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    if top_logprobs and not logprobs:
        raise InvalidArgument("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
