"""Fuzzing from /openapi.json: schemathesis generates requests for every operation the document
lists (valid ones, and invalid ones in negative mode) against a live daemon on loopback. No
answer may be a server error, none may hang, a valid management call's answer must match its
schema, and the daemon's memory stays flat. Bounded: a few examples per operation and mode,
and a time budget for the whole run.

Left out, and why:
- POST /v1/shutdown: it stops the daemon under test.
- DELETE /v1/store/models/{name}, DELETE /api/delete: a generated name could be the fixture's
  model; the rest of the run needs it (their refusals are covered by tests/e2e/test_openapi.py).
- GET /v1/events: an endless stream by design (with no history to send it waits for events):
  a correct answer would read as a hang.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.hub_daemon import hub_daemon
from tests.helpers import DaemonProc

pytestmark = pytest.mark.slow
EXCLUDED = {("POST", "/v1/shutdown"), ("DELETE", "/v1/store/models/{name}"), ("DELETE", "/api/delete"),
            ("GET", "/v1/events")}
EXAMPLES = 3          # per operation and mode
BUDGET_S = 50.0       # the whole run; operations not reached by then are reported, not failed
TIMEOUT_S = 15.0      # one request: over this is a hang
RSS_GROWTH_MB = 96    # the daemon's resident memory, after the run against before it


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    with hub_daemon(tmp_path_factory.mktemp("fuzz"), gguf_path) as (d, _):
        yield d


def _refused(response: Any) -> bool:
    """A deliberate 501 with an error body: an RPC of the contract this daemon does not serve
    (gateway/management.py), Ollama's push (there is no registry to push to)."""
    try:
        return response.status_code == 501 and bool(response.json())
    except ValueError:
        return False


def test_fuzz_every_operation(served: DaemonProc) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from openapi_schema_validator import OAS30Validator

    base = served.http
    doc = httpx.get(f"{base}/openapi.json").json()
    # Warm-up: what the first requests import and cache is not growth.
    for path in ("/v1/models", "/api/tags", "/v1/status", "/v1/store/models"):
        httpx.get(base + path)
    daemon = psutil.Process(served.proc.pid)
    rss_before = daemon.memory_info().rss
    schema = schemathesis.openapi.from_dict(doc)
    problems: list[str] = []
    tried, skipped = 0, []
    deadline = time.monotonic() + BUDGET_S
    for result in schema.get_all_operations():
        op = result.ok()
        key = (op.method.upper(), op.path)
        if key in EXCLUDED:
            continue
        if time.monotonic() > deadline:
            skipped.append(f"{key[0]} {key[1]}")
            continue
        declared = doc["paths"][op.path][op.method.lower()]
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                start = time.monotonic()
                try:
                    response = case.call(base_url=base, timeout=TIMEOUT_S)
                except Exception as e:  # a timeout or a dropped connection
                    problems.append(f"{key}: {type(e).__name__} after {time.monotonic() - start:.1f}s "
                                    f"for {case.as_curl_command()[:400]}")
                    return
                if response.status_code >= 500 and not _refused(response):
                    problems.append(f"{key} {mode.value}: {response.status_code} {response.text[:300]} "
                                    f"for {case.as_curl_command()[:400]}")
                elif (mode == schemathesis.GenerationMode.POSITIVE and response.status_code == 200
                      and "x-grpc-method" in declared and not declared.get("x-stream")):
                    want = declared["responses"]["200"]["content"]["application/json"]["schema"]
                    errors = list(OAS30Validator({**want, "components": doc["components"]})
                                  .iter_errors(response.json()))
                    if errors:
                        problems.append(f"{key}: answer off its schema: {errors[0].message}")

            try:
                run()
            except Unsatisfiable:  # nothing invalid to send (no parameters, no body): nothing to do
                assert mode == schemathesis.GenerationMode.NEGATIVE, key
        tried += 1
    print(f"fuzzed {tried} operations in {time.monotonic() - deadline + BUDGET_S:.1f}s")
    assert not problems, "\n".join(problems[:20])
    assert tried >= 40 and not skipped, (tried, skipped)
    rss_after = daemon.memory_info().rss
    assert rss_after - rss_before < RSS_GROWTH_MB << 20, (rss_before >> 20, rss_after >> 20)
    assert served.proc.poll() is None
    assert httpx.get(f"{base}/readyz").status_code == 200
