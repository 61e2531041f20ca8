"""JSON schemas checked (and made safe) before they reach the grammar compiler.

A schema from a request (OpenAI `response_format`, Ollama `format`, tool parameters) becomes a
llama.cpp grammar: llama-cpp-python's Python converter writes GBNF, llama.cpp's C++ parser reads
it. Both trust their input. Measured on hostile schemas: an empty `enum` or `anyOf` gives an
empty rule and a string `maxLength` of 2,000 or an array `maxItems` of 100,000 nests thousands of
optional groups, and each killed the worker with SIGSEGV; a 200,000-value enum took minutes; a
lookahead `pattern` or an unknown `type` raised AssertionError; a remote `$ref` would be
fetched. So a schema is walked once here, pure Python with no network, and either refused with
what is wrong (InvalidArgument, a 400) or returned in a form the converter compiles safely.

It lives in core, not in the llama.cpp runtime, because it is pure and has two callers: the HTTP
gateway checks a request's schema before any queue or worker (a 400 at once), and the worker
checks it again before compiling (a gRPC client reaches the worker without the gateway).

Rewrites (the output still validates against what the caller can reasonably expect):
- an upper repetition bound over MAX_REPEAT (`maxLength`, `maxItems`) is dropped: the grammar
  allows any length there (the generation's max_tokens bounds it) instead of a nesting that
  crashes the compiler;
- an unanchored `pattern` is anchored the way JSON Schema reads it (a match anywhere).
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from ohmygpu.core.errors import InvalidArgument

MAX_SCHEMA_BYTES = 64 << 10  # the JSON text of one schema
MAX_NODES = 4096  # subschemas, counted over the whole document
MAX_DEPTH = 32  # nesting of subschemas
MAX_ENUM = 1024  # values of one enum (each one a grammar alternative)
MAX_ALTERNATIVES = 64  # entries of anyOf / oneOf / allOf, and of a type list
MAX_PROPERTIES = 256  # properties of one object
MAX_REPEAT = 256  # largest repetition count compiled as a bounded repetition
MAX_PATTERN = 512  # characters of a regular expression
MAX_PATTERN_DEPTH = 16  # nesting of groups in one pattern

TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})
_LOCAL_REF = re.compile(r"#(/[^/]+)+")
# Pattern syntax the converter cannot translate: lookarounds, named or flagged groups, back
# references, and lazy or possessive quantifiers.
_UNSUPPORTED_PATTERN = re.compile(r"\(\?|\\[1-9kbBAZzG]|[*+?}][?+]")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


class _Walk:
    def __init__(self, root: dict[str, Any], param: str) -> None:
        self.root = root
        self.param = param
        self.nodes = 0

    def fail(self, where: str, why: str) -> InvalidArgument:
        return InvalidArgument(f"unsupported JSON schema at {(where or '/')[-80:]}: {why}", param=self.param)

    def schema(self, node: Any, where: str, depth: int) -> None:
        if isinstance(node, bool):
            return  # true / false schemas
        if not isinstance(node, dict):
            raise self.fail(where, "a schema must be an object")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(where, f"more than {MAX_NODES} subschemas")
        if depth > MAX_DEPTH:
            raise self.fail(where, f"nested more than {MAX_DEPTH} levels deep")
        self.types(node, where)
        if "$ref" in node:
            self.ref(node["$ref"], where)
        if "enum" in node:
            self.enum(node["enum"], where)
        for key in ("anyOf", "oneOf", "allOf"):
            if key in node:
                subs = node[key]
                if not isinstance(subs, list) or not subs:
                    raise self.fail(where, f"'{key}' must be a non-empty array of schemas")
                if len(subs) > MAX_ALTERNATIVES:
                    raise self.fail(where, f"'{key}' has {len(subs)} entries; at most {MAX_ALTERNATIVES}")
                for i, sub in enumerate(subs):
                    self.schema(sub, f"{where}/{key}/{i}", depth + 1)
        self.object(node, where, depth)
        self.array(node, where, depth)
        self.string(node, where)
        for key in ("$defs", "definitions"):
            defs = node.get(key)
            if defs is None:
                continue
            if not isinstance(defs, dict):
                raise self.fail(where, f"'{key}' must be an object")
            for name, sub in defs.items():
                self.schema(sub, f"{where}/{key}/{name}", depth + 1)
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if key in node and not _is_number(node[key]):
                raise self.fail(where, f"'{key}' must be a finite number")

    def types(self, node: dict[str, Any], where: str) -> None:
        if "type" not in node:
            return
        t = node["type"]
        names = t if isinstance(t, list) else [t]
        if not names or len(names) > MAX_ALTERNATIVES:
            raise self.fail(where, "'type' must be a type name or a non-empty array of them")
        for name in names:
            if not isinstance(name, str) or name not in TYPES:  # [{}] is unhashable
                raise self.fail(where, f"unknown type {json.dumps(name)[:40]}; use one of {sorted(TYPES)}")

    def ref(self, ref: Any, where: str) -> None:
        if not isinstance(ref, str):
            raise self.fail(where, "'$ref' must be a string")
        if ref in ("#", "#/"):
            raise self.fail(where, "'$ref' to the root: recursive schemas are not supported")
        if not _LOCAL_REF.fullmatch(ref):
            raise self.fail(where, f"'$ref' {json.dumps(ref)[:80]}: only references inside the schema "
                                   "('#/$defs/name') are supported; nothing is fetched")
        self.target(ref, where)

    def target(self, ref: str, where: str) -> Any:
        node: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(node, dict) or part not in node:
                raise self.fail(where, f"'$ref' {json.dumps(ref)[:80]} points at nothing")
            node = node[part]
        if not isinstance(node, dict):
            raise self.fail(where, f"'$ref' {json.dumps(ref)[:80]} does not point at a schema")
        return node

    def enum(self, values: Any, where: str) -> None:
        if not isinstance(values, list) or not values:
            raise self.fail(where, "'enum' must be a non-empty array")
        if len(values) > MAX_ENUM:
            raise self.fail(where, f"'enum' has {len(values)} values; at most {MAX_ENUM} are supported")

    def object(self, node: dict[str, Any], where: str, depth: int) -> None:
        props = node.get("properties")
        if props is not None:
            if not isinstance(props, dict):
                raise self.fail(where, "'properties' must be an object")
            if len(props) > MAX_PROPERTIES:
                raise self.fail(where, f"{len(props)} properties; at most {MAX_PROPERTIES}")
            for name, sub in props.items():
                self.schema(sub, f"{where}/properties/{name}", depth + 1)
        required = node.get("required")
        if required is not None and (not isinstance(required, list)
                                     or not all(isinstance(r, str) for r in required)):
            raise self.fail(where, "'required' must be an array of property names")
        extra = node.get("additionalProperties")
        if extra is not None:
            if not isinstance(extra, (bool, dict)):
                raise self.fail(where, "'additionalProperties' must be a boolean or a schema")
            self.schema(extra, f"{where}/additionalProperties", depth + 1)

    def array(self, node: dict[str, Any], where: str, depth: int) -> None:
        for key in ("items", "prefixItems"):
            items = node.get(key)
            if items is None:
                continue
            if isinstance(items, list):
                if len(items) > MAX_PROPERTIES:
                    raise self.fail(where, f"'{key}' has {len(items)} entries; at most {MAX_PROPERTIES}")
                for i, sub in enumerate(items):
                    self.schema(sub, f"{where}/{key}/{i}", depth + 1)
            else:
                self.schema(items, f"{where}/{key}", depth + 1)
        self.bounds(node, where, "minItems", "maxItems")

    def string(self, node: dict[str, Any], where: str) -> None:
        self.bounds(node, where, "minLength", "maxLength")
        if "format" in node and not isinstance(node["format"], str):
            raise self.fail(where, "'format' must be a string")
        if "pattern" in node:
            node["pattern"] = self.pattern(node["pattern"], where)

    def bounds(self, node: dict[str, Any], where: str, lo_key: str, hi_key: str) -> None:
        lo, hi = node.get(lo_key), node.get(hi_key)
        for key, value in ((lo_key, lo), (hi_key, hi)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise self.fail(where, f"'{key}' must be a non-negative integer")
        if lo is not None and lo > MAX_REPEAT:
            raise self.fail(where, f"'{lo_key}' {lo} is more than the {MAX_REPEAT} a grammar can enforce")
        if lo is not None and hi is not None and lo > hi:
            raise self.fail(where, f"'{lo_key}' is larger than '{hi_key}'")
        if hi is not None and hi > MAX_REPEAT:
            del node[hi_key]  # rewrite: an unbounded repetition compiles safely; a huge one does not

    def pattern(self, pattern: Any, where: str) -> str:
        if not isinstance(pattern, str):
            raise self.fail(where, "'pattern' must be a string")
        if len(pattern) > MAX_PATTERN:
            raise self.fail(where, f"'pattern' is longer than {MAX_PATTERN} characters")
        bad = _UNSUPPORTED_PATTERN.search(pattern)
        if bad:
            raise self.fail(where, f"'pattern' uses {bad.group(0)!r} (lookarounds, group flags, back "
                                   "references and lazy quantifiers are not supported)")
        try:
            re.compile(pattern)
        except re.error as e:
            raise self.fail(where, f"'pattern' is not a valid regular expression: {e}") from None
        depth = level = 0
        escaped = in_class = False
        for c in pattern:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif in_class:
                in_class = c != "]"
            elif c == "[":
                in_class = True
            elif c == "(":
                level += 1
                depth = max(depth, level)
            elif c == ")":
                level -= 1
        if depth > MAX_PATTERN_DEPTH:
            raise self.fail(where, f"'pattern' nests groups more than {MAX_PATTERN_DEPTH} deep")
        for lo, hi in _QUANTIFIER.findall(pattern):
            if max(int(lo or 0), int(hi or 0)) > MAX_REPEAT:
                raise self.fail(where, f"'pattern' repeats more than {MAX_REPEAT} times")
        # JSON Schema patterns match anywhere; the converter wants ^...$ around the whole.
        starts = pattern.startswith("^")
        ends = pattern.endswith("$") and not pattern.endswith("\\$")
        if starts and ends:
            return pattern
        body = pattern[1 if starts else 0:len(pattern) - 1 if ends else len(pattern)]
        return "^" + ("" if starts else ".*") + "(" + body + ")" + ("" if ends else ".*") + "$"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ref_cycle(root: dict[str, Any], walk: _Walk) -> str | None:
    """A `$ref` that leads back to itself (directly or through other refs), if any."""
    edges: dict[str, set[str]] = {}

    def refs_in(node: Any, into: set[str]) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                into.add(node["$ref"])
            for v in node.values():
                refs_in(v, into)
        elif isinstance(node, list):
            for v in node:
                refs_in(v, into)

    pending: set[str] = set()
    refs_in(root, pending)  # the converter resolves a $ref wherever it is, so check them all
    for ref in pending:
        walk.ref(ref, "$ref")
    while pending:
        ref = pending.pop()
        if ref in edges:
            continue
        edges[ref] = set()
        refs_in(walk.target(ref, ref), edges[ref])
        for new in edges[ref] - edges.keys():
            walk.ref(new, "$ref")
            pending.add(new)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(ref: str) -> str | None:
        state[ref] = 1
        for nxt in edges.get(ref, ()):
            if state.get(nxt) == 1:
                return nxt
            if nxt not in state and (found := visit(nxt)):
                return found
        state[ref] = 2
        return None

    for ref in list(edges):
        if ref not in state and (found := visit(ref)):
            return found
    return None


def check_schema(schema: Any, *, param: str = "response_format") -> dict[str, Any]:
    """A copy of `schema` that the grammar compiler handles safely; raises InvalidArgument
    (naming the place in the schema and what is wrong) for a schema it cannot."""
    if not isinstance(schema, dict):
        raise InvalidArgument("a JSON schema must be a JSON object", param=param)
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError, RecursionError):
        raise InvalidArgument("the JSON schema is not plain JSON", param=param) from None
    if size > MAX_SCHEMA_BYTES:
        raise InvalidArgument(f"the JSON schema is {size} bytes; at most {MAX_SCHEMA_BYTES} are supported",
                              param=param)
    try:
        out = copy.deepcopy(schema)
    except RecursionError:
        raise InvalidArgument(f"the JSON schema nests more than {MAX_DEPTH} levels deep", param=param) from None
    walk = _Walk(out, param)
    try:
        walk.schema(out, "", 0)
        cycle = _ref_cycle(out, walk)
    except RecursionError:
        raise InvalidArgument(f"the JSON schema nests more than {MAX_DEPTH} levels deep", param=param) from None
    if cycle is not None:
        raise InvalidArgument(f"unsupported JSON schema: '$ref' {cycle} is recursive (recursive schemas "
                              "are not supported)", param=param)
    return out
