"""daemon/quarantine.py: fingerprints ignore per-try noise, entries expire and are bounded."""

from __future__ import annotations

import pytest
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.daemon.quarantine import RequestQuarantine, fingerprint
from ohmygpu.runtime.v1 import runtime_pb2


def _chat(text: str, *, seed: int | None = None, keep_alive: str = "") -> runtime_pb2.ChatRequest:
    req = runtime_pb2.ChatRequest(model="m", keep_alive=keep_alive)
    req.messages.add(role="user", content=text)
    if seed is not None:
        req.params.seed = seed
    return req


def test_fingerprint_ignores_seed_and_keep_alive_but_not_content() -> None:
    base = fingerprint(_chat("boom"))
    assert fingerprint(_chat("boom", seed=3, keep_alive="5m")) == base
    assert fingerprint(_chat("boom!")) != base
    other_model = _chat("boom")
    other_model.model = "n"
    assert fingerprint(other_model) != base
    assert fingerprint(runtime_pb2.CompleteRequest(model="m", prompt="boom")) != base


def test_a_quarantined_request_is_refused_until_it_expires() -> None:
    now = [0.0]
    q = RequestQuarantine(ttl_s=60, clock=lambda: now[0])
    fp = fingerprint(_chat("boom"))
    q.check(fp)  # unknown: passes
    q.add(fp, model="m", what="was killed by SIGSEGV")
    now[0] = 30
    with pytest.raises(InvalidArgument, match="SIGSEGV.*30 s ago.*refused for 1 minutes"):
        q.check(fp)
    now[0] = 61
    q.check(fp)
    assert len(q) == 0


def test_the_quarantine_is_bounded_oldest_first() -> None:
    q = RequestQuarantine(capacity=3)
    for i in range(5):
        q.add(f"fp{i}", model="m", what="x")
    assert len(q) == 3
    q.check("fp0")  # forgotten
    with pytest.raises(InvalidArgument):
        q.check("fp4")
