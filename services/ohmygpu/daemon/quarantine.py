"""Requests whose input killed a worker, refused on sight for a while.

Why: a worker that dies while serving one request alone died of that request (a hostile schema,
a template, a bug in the inference library), not of its model. Counting such deaths toward
OMG_MAX_CRASHES let one request, repeated three times, mark a model failed for everyone until
the daemon restarted, with no admin token needed. So a death with one request in flight is
blamed on that request: its fingerprint is kept here and the same request is refused at once
(400) instead of killing the next worker, and the model is not marked failed by it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from ohmygpu.core.errors import InvalidArgument

# Fields that vary between repeats of the same input without changing what the worker is given
# to chew on: a new seed or keep_alive must not make a known-bad request new again.
_NOISE_FIELDS = ("keep_alive",)
_NOISE_PARAMS = ("seed",)


def fingerprint(request: Message) -> str:
    """A digest of what a request gives the worker, ignoring per-try noise (seed, keep_alive)."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in _NOISE_FIELDS:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    if "params" in copy.DESCRIPTOR.fields_by_name and copy.HasField("params"):  # type: ignore[attr-defined]
        for name in _NOISE_PARAMS:
            copy.params.ClearField(name)  # type: ignore[attr-defined]
        if copy.params.ByteSize() == 0:  # type: ignore[attr-defined]
            copy.ClearField("params")  # set-but-empty serializes differently from unset
    data = copy.SerializeToString(deterministic=True)
    return hashlib.sha256(type(request).DESCRIPTOR.full_name.encode() + b"\0" + data).hexdigest()


@dataclass(frozen=True)
class Offence:
    """What a quarantined request did, for the refusal message."""

    model: str
    what: str  # how the worker ended, e.g. "was killed by SIGSEGV"
    at: float


class RequestQuarantine:
    """A bounded, expiring set of request fingerprints that killed a worker."""

    def __init__(self, *, capacity: int = 1024, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, Offence] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, fp: str, *, model: str, what: str) -> None:
        """Remember that the request `fp` ended model `model`'s worker as `what` says."""
        self._entries.pop(fp, None)
        self._entries[fp] = Offence(model, what, self.clock())
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)  # the oldest goes first

    def check(self, fp: str) -> None:
        """Raise InvalidArgument if `fp` killed a worker within the last ttl_s seconds."""
        offence = self._entries.get(fp)
        if offence is None:
            return
        age = self.clock() - offence.at
        if age >= self.ttl_s:
            del self._entries[fp]
            return
        raise InvalidArgument(
            f"this request made the worker serving '{offence.model}' stop ({offence.what}) "
            f"{_ago(age)}; the same request is refused for {self.ttl_s / 60:.0f} minutes so it "
            "cannot take the model down again. Other requests are served as usual.")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"
