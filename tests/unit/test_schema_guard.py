"""JSON schemas refused or rewritten before the grammar compiler sees them (schema_guard)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.schema_guard import MAX_REPEAT, check_schema

# Each of these hung or crashed a worker (SIGSEGV in llama.cpp's grammar code) before the guard.
HOSTILE = {
    "unknown type": {"type": "banana"},
    "empty type list": {"type": []},
    "https $ref": {"$ref": "https://example.com/schema.json"},
    "relative $ref": {"$ref": "other.json#/x"},
    "recursive $ref": {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
                       "$ref": "#/$defs/node"},
    "mutually recursive $ref": {"$defs": {"a": {"type": "array", "items": {"$ref": "#/$defs/b"}},
                                          "b": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}},
                                "$ref": "#/$defs/a"},
    "self-referencing root": {"type": "object", "properties": {"self": {"$ref": "#"}}},
    "dangling $ref": {"$ref": "#/$defs/missing"},
    "remote $ref under an unknown keyword": {"not": {"$ref": "https://example.com/x"}},
    "lookahead pattern": {"type": "string", "pattern": "^(?=a)a+$"},
    "negative lookahead": {"type": "string", "pattern": "^(?!b).*$"},
    "back reference": {"type": "string", "pattern": "^(a)\\1$"},
    "invalid regex": {"type": "string", "pattern": "^(a$"},
    "huge quantifier in pattern": {"type": "string", "pattern": "^a{100000}$"},
    "empty enum": {"enum": []},
    "enum not an array": {"enum": "abc"},
    "huge integer enum": {"type": "integer", "enum": list(range(200_000))},
    "empty anyOf": {"anyOf": []},
    "empty oneOf": {"oneOf": []},
    "huge minLength": {"type": "string", "minLength": 100_000},
    "negative maxItems": {"type": "array", "items": {"type": "integer"}, "maxItems": -1},
    "min over max": {"type": "string", "minLength": 5, "maxLength": 2},
    "string maxLength": {"type": "string", "maxLength": "10"},
    "deep nesting": json.loads('{"type": "array", "items": ' * 40 + '{"type": "null"}' + "}" * 40),
    "many nodes": {"properties": {f"a{i}": {"properties": {f"b{j}": {"properties": {
        f"c{k}": {} for k in range(20)}} for j in range(15)}} for i in range(15)}},
    "huge schema text": {"type": "object", "properties": {f"p{i}": {"type": "object", "properties": {
        f"q{j}": {"type": "string"} for j in range(40)}} for i in range(200)}},
    "enum over the limit": {"type": "integer", "enum": list(range(2000))},
    "not an object": ["type", "string"],
    "bad required": {"type": "object", "required": "name"},
    "infinite maximum": {"type": "number", "maximum": float("inf")},
    "type list holding an object": {"type": [{}]},
    "type that is an object": {"type": {"a": 1}},
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_schema_is_refused_fast_with_a_reason(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidArgument) as info:
        check_schema(HOSTILE[name], param="response_format")
    assert time.monotonic() - started < 1
    assert info.value.param == "response_format"
    message = info.value.message
    assert "schema" in message and "Error" not in message and "Traceback" not in message


def test_huge_upper_bounds_are_dropped_not_compiled() -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string", "maxLength": 2000, "minLength": 1},
        "a": {"type": "array", "items": {"type": "integer"}, "maxItems": 100_000},
        "ok": {"type": "string", "maxLength": MAX_REPEAT}}}
    out = check_schema(schema)
    assert out["properties"]["s"] == {"type": "string", "minLength": 1}
    assert out["properties"]["a"] == {"type": "array", "items": {"type": "integer"}}
    assert out["properties"]["ok"]["maxLength"] == MAX_REPEAT
    assert schema["properties"]["s"]["maxLength"] == 2000  # the caller's schema is not changed


def test_patterns_are_anchored_as_json_schema_reads_them() -> None:
    assert check_schema({"type": "string", "pattern": "^[a-z]+$"})["pattern"] == "^[a-z]+$"
    assert check_schema({"type": "string", "pattern": "abc"})["pattern"] == "^.*(abc).*$"
    assert check_schema({"type": "string", "pattern": "^ab|cd"})["pattern"] == "^(ab|cd).*$"
    assert check_schema({"type": "string", "pattern": "x$"})["pattern"] == "^.*(x)$"


def test_ordinary_schemas_pass_unchanged() -> None:
    schemas = [
        {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                          "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}},
         "required": ["name", "age"], "additionalProperties": False},
        {"$defs": {"p": {"type": "object", "properties": {"x": {"type": "number"}}}},
         "type": "array", "items": {"$ref": "#/$defs/p"}},
        {"enum": ["red", "green", "blue"]},
        {"anyOf": [{"type": "string", "format": "date"}, {"type": ["integer", "null"]}]},
        {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"},
        {},
    ]
    for s in schemas:
        assert check_schema(s) == s


def test_open_webui_style_tool_parameters_pass() -> None:
    # The shape of Open WebUI 0.12's built-in tools' parameters (36 of them come with every chat).
    params = {"type": "object", "properties": {
        "query": {"type": "string", "description": "The search query"},
        "count": {"type": "integer", "description": "How many results", "default": 5},
        "urls": {"type": "array", "items": {"type": "string"}}}, "required": ["query"]}
    assert check_schema(params, param="tools") == params


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)
_KEYWORDS = st.sampled_from(["type", "enum", "anyOf", "oneOf", "allOf", "items", "properties", "$ref",
                             "$defs", "pattern", "minLength", "maxLength", "minItems", "maxItems",
                             "required", "additionalProperties", "const", "format", "minimum"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYWORDS, _JSON, max_size=5) | _JSON)
def test_any_json_schema_is_checked_or_refused_never_an_exception(schema: object) -> None:
    """The class behind "type": [{}] (TypeError: unhashable, a 500): whatever JSON a client
    sends as a schema, the guard returns a schema or raises InvalidArgument."""
    try:
        check_schema(schema, param="response_format")
    except InvalidArgument:
        pass
