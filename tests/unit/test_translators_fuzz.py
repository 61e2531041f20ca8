"""Property test of the HTTP dialects' request parsing: for any JSON body (and some that are
not JSON), the OpenAI and Ollama routes either hand the daemon a well-formed internal request
or answer a 4xx error in the dialect's own format; never a 500, never another exception.

The real application (gateway.app.build_app: security layer, body reading, translators) runs
in-process through Starlette's TestClient, over the real daemon API; only the orchestrator
behind it is a stand-in that records the request it is given instead of running a model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.api import DaemonAPI
from ohmygpu.gateway.app import build_app
from starlette.testclient import TestClient

from tests.fakes.orchestrator import ScriptedOrchestrator


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, ScriptedOrchestrator]:
    home = tmp_path_factory.mktemp("fuzz")
    cfg = Settings.load(environ={"OMG_HOME": str(home), "OMG_CONFIG": str(Path(home) / "none.toml")})
    orchestrator = ScriptedOrchestrator()
    api = DaemonAPI(cfg, ModelStore(Path(cfg.home)), orchestrator,  # type: ignore[arg-type]
                    jobs=None, runs=None, events=None)  # type: ignore[arg-type]
    asgi = build_app(cfg, api)
    return TestClient(asgi, base_url="http://127.0.0.1:11434"), orchestrator


# JSON values, with text that includes lone surrogates (hypothesis leaves them out by default).
_chars = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
_text = st.text(_chars, max_size=12)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                     st.floats(allow_nan=True, allow_infinity=True), _text)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)), max_leaves=12)


# Plausible requests of each route; each test then breaks a few of their parts (any field,
# at any depth, replaced by any JSON value or removed), so that most of a body gets past the
# first checks and a hostile value meets every later one.
_role = st.sampled_from(["system", "user", "assistant", "tool", "developer"])
_content = st.one_of(_text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), max_size=3))
_call = st.fixed_dictionaries({"id": _text, "type": st.just("function"),
                               "function": st.fixed_dictionaries({"name": _text, "arguments": _json})})
_message = st.fixed_dictionaries({"role": _role, "content": _content}, optional={
    "name": _text, "tool_call_id": _text, "tool_calls": st.lists(_call, max_size=2)})
_tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": _text}, optional={"description": _text, "parameters": st.just({"type": "object"})})})
_number = st.one_of(st.integers(-5, 1 << 21), st.floats(-3, 3))
_sampling = {key: _number for key in ("temperature", "top_p", "min_p", "top_k", "seed", "presence_penalty",
                                      "frequency_penalty", "repeat_penalty")}
_common = {"stream": st.booleans(), "stop": st.one_of(_text, st.lists(_text, max_size=3)),
           "tools": st.lists(_tool, max_size=2),
           "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "f"}}]),
           **_sampling}
_model = st.sampled_from(["smollm2", "org/m:Q4_K_M", "hf.co/org/repo"])
_messages = st.lists(_message, min_size=1, max_size=4)
_response_format = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    st.just({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}))
_openai_chat = st.fixed_dictionaries({"model": _model, "messages": _messages}, optional={
    **_common, "max_tokens": _number, "max_completion_tokens": _number, "n": st.just(1),
    "response_format": _response_format,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})})
_openai_completion = st.fixed_dictionaries({"model": _model, "prompt": st.one_of(_text, st.lists(_text, max_size=2))},
                                           optional={**_common, "suffix": _text, "max_tokens": _number,
                                                     "response_format": _response_format})
_options = st.fixed_dictionaries({}, optional={**_sampling, "num_predict": _number, "num_ctx": _number,
                                               "stop": st.lists(_text, max_size=2)})
_keep_alive = st.one_of(st.sampled_from(["5m", "0", "-1", "1h30m", "10x", ""]), st.integers(-2, 600), st.floats())
_format = st.one_of(st.just("json"), st.just(""), st.just({"type": "object"}))
_ollama_chat = st.fixed_dictionaries({"model": _model, "messages": _messages}, optional={
    **_common, "options": _options, "keep_alive": _keep_alive, "format": _format})
_ollama_generate = st.fixed_dictionaries({"model": _model, "prompt": _text}, optional={
    "stream": st.booleans(), "system": _text, "suffix": _text, "raw": st.booleans(), "options": _options,
    "keep_alive": _keep_alive, "format": _format})


def _broken(data: st.DataObject, body: dict[str, Any]) -> dict[str, Any]:
    """A copy of `body` with up to three of its parts, found by a random walk down from the
    top (so deep fields are hit as often as shallow ones), replaced by any JSON value or
    removed. A copy: strategies such as st.just hand out the same object every time."""
    body = copy.deepcopy(body)
    for _ in range(data.draw(st.integers(0, 3))):
        parent: Any = body
        while True:
            keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            if not keys:
                break
            key = data.draw(st.sampled_from(keys))
            child = parent[key]
            if isinstance(child, (dict, list)) and child and data.draw(st.booleans()):
                parent = child  # go deeper
                continue
            if isinstance(parent, dict) and data.draw(st.integers(0, 3)) == 0:
                del parent[key]
            else:
                parent[key] = data.draw(_json)
            break
    return body


def _encode(body: Any, how: str) -> bytes:
    if how == "ascii":  # lone surrogates as \\ud800 escapes
        return json.dumps(body).encode()
    if how == "utf8":  # lone surrogates as (invalid) UTF-8 bytes
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(body).encode()[:-1]  # truncated: not JSON


def _check(client_app: tuple[TestClient, ScriptedOrchestrator], path: str, body: Any, how: str) -> None:
    client, orchestrator = client_app
    orchestrator.requests.clear()
    r = client.post(path, content=_encode(body, how), headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 404, 413), (r.status_code, r.text, body)
    if r.status_code == 200:
        n = body.get("n") if isinstance(body, dict) and path.startswith("/v1/") else None
        choices = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else 1  # OpenAI's n
        assert len(orchestrator.requests) == choices, orchestrator.requests
        request = orchestrator.requests[0]
        if isinstance(request, tuple):  # ollama: no prompt or messages loads or unloads
            assert path.startswith("/api/")
            return
        # A valid internal request: it encodes and decodes to itself (the model name is the
        # store's to check, as it is for gRPC clients).
        again = type(request).FromString(request.SerializeToString())
        assert again == request
        return
    assert not orchestrator.requests, "a refused request reached the orchestrator"
    error = r.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and error
    else:
        assert error["message"] and error["type"] == "invalid_request_error"
    assert "Traceback" not in r.text and "Error:" not in r.text


_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                     database=None)
_HOW = st.sampled_from(["ascii", "ascii", "ascii", "utf8", "broken"])


@_SETTINGS
@given(body=_openai_chat, how=_HOW, data=st.data())
def test_openai_chat_completions(app: tuple[TestClient, ScriptedOrchestrator], body: Any, how: str,
        data: st.DataObject) -> None:
    _check(app, "/v1/chat/completions", _broken(data, body), how)


@_SETTINGS
@given(body=_openai_completion, how=_HOW, data=st.data())
def test_openai_completions(app: tuple[TestClient, ScriptedOrchestrator], body: Any, how: str,
        data: st.DataObject) -> None:
    _check(app, "/v1/completions", _broken(data, body), how)


@_SETTINGS
@given(body=_ollama_chat, how=_HOW, data=st.data())
def test_ollama_chat(app: tuple[TestClient, ScriptedOrchestrator], body: Any, how: str,
        data: st.DataObject) -> None:
    _check(app, "/api/chat", _broken(data, body), how)


@_SETTINGS
@given(body=_ollama_generate, how=_HOW, data=st.data())
def test_ollama_generate(app: tuple[TestClient, ScriptedOrchestrator], body: Any, how: str,
        data: st.DataObject) -> None:
    _check(app, "/api/generate", _broken(data, body), how)


@_SETTINGS
@given(body=_json)
def test_any_json_body(app: tuple[TestClient, ScriptedOrchestrator], body: Any) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate"):
        _check(app, path, body, "ascii")


# Every field of a full request, set to each kind of JSON value in turn: the systematic
# complement of the random tests above (a deep field gets every kind, not only a lucky one).
_FULL_MESSAGES = [{"role": "system", "content": "s"},
                  {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "n"},
                  {"role": "assistant", "content": "", "tool_calls": [
                      {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
                  {"role": "tool", "content": "r", "tool_call_id": "c1"}]
_FULL_TOOLS = [{"type": "function", "function": {"name": "f", "description": "d",
                                                 "parameters": {"type": "object"}}}]
_FULL = {
    "/v1/chat/completions": {
        "model": "smollm2", "messages": _FULL_MESSAGES, "tools": _FULL_TOOLS, "stop": ["x", "y"],
        "tool_choice": {"type": "function", "function": {"name": "f"}}, "temperature": 0.5, "top_p": 0.9,
        "seed": 1, "max_tokens": 5, "n": 1, "stream": True, "stream_options": {"include_usage": True},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
    "/v1/completions": {"model": "smollm2", "prompt": ["p"], "suffix": "", "max_tokens": 3, "stop": "x",
                        "response_format": {"type": "json_object"}, "stream": False},
    "/api/chat": {"model": "smollm2", "messages": _FULL_MESSAGES, "tools": _FULL_TOOLS, "stream": False,
                  "options": {"temperature": 0.5, "num_predict": 4, "num_ctx": 512, "stop": ["x"], "seed": 2},
                  "keep_alive": "5m", "format": {"type": "object"}},
    "/api/generate": {"model": "smollm2", "prompt": "p", "system": "s", "raw": False,
                      "stream": False, "options": {"top_k": 3, "stop": ["x"]}, "keep_alive": 30, "format": "json"},
}
_KINDS: list[Any] = [None, True, False, 0, 7, -1, 1 << 64, 1.5, float("inf"), "", "text", "\ud800", [], [1],
                     ["a"], [{}], {}, {"a": 1}, [[[]]]]


def _all_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        out.append((*path, key))
        out.extend(_all_paths(item, (*path, key)))
    return out


@pytest.mark.parametrize("path", sorted(_FULL))
def test_every_field_with_every_kind_of_value(app: tuple[TestClient, ScriptedOrchestrator], path: str) -> None:
    _check(app, path, _FULL[path], "ascii")  # the full request itself is valid
    for where in _all_paths(_FULL[path]):
        for kind in [*_KINDS, "<removed>"]:
            body = copy.deepcopy(_FULL[path])
            parent: Any = body
            for step in where[:-1]:
                parent = parent[step]
            if kind == "<removed>":
                if not isinstance(parent, dict):
                    continue
                del parent[where[-1]]
            else:
                parent[where[-1]] = copy.deepcopy(kind)
            try:
                _check(app, path, body, "ascii")
            except Exception as e:
                raise AssertionError(f"{path} with {where} = {kind!r}: {e!r}") from e
