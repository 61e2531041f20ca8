"""Structured output: response formats and tool calls turned into JSON schemas, and tool-call
output parsed back.

llama-cpp-python ignores OpenAI's json_schema response format on its own, so every constraint
here becomes a JSON schema that the worker compiles to a llama.cpp grammar: the output then
validates by construction.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.schema_guard import check_schema
from ohmygpu.runtime.v1 import runtime_pb2


class OutputMode(Enum):
    """How the generated text is interpreted."""

    TEXT = "text"  # plain content
    TOOL_ARGUMENTS = "tool_arguments"  # the arguments object of one known function
    TOOL_CALL = "tool_call"  # {"name": ..., "arguments": {...}} for one of several tools
    TOOL_AUTO = "tool_auto"  # free text that may turn out to be a tool call


@dataclass
class OutputPlan:
    """What to constrain generation with and how to read its output."""

    mode: OutputMode
    schema: dict[str, Any] | None = None  # compiled to a grammar when set
    any_json: bool = False  # json_object: any JSON object
    function_name: str = ""  # for TOOL_ARGUMENTS


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise InvalidArgument(f"{what} is not valid JSON: {e}") from e


def tool_schemas(tools: list[runtime_pb2.Tool]) -> dict[str, dict[str, Any]]:
    """name -> parameters schema; raises InvalidArgument for duplicate names or bad JSON."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        if not tool.name:
            raise InvalidArgument("every tool needs a function name", param="tools")
        if tool.name in out:
            raise InvalidArgument(f"tool '{tool.name}' is given twice", param="tools")
        params = _load_json(tool.parameters_json, f"parameters of tool '{tool.name}'")
        if not isinstance(params, dict):
            raise InvalidArgument(f"parameters of tool '{tool.name}' must be a JSON object schema")
        out[tool.name] = params or {"type": "object"}
    return out


def plan_output(
    response_format: runtime_pb2.ResponseFormat,
    tools: list[runtime_pb2.Tool],
    tool_choice: runtime_pb2.ToolChoice,
) -> OutputPlan:
    """Decide the constraint for a request; raises InvalidArgument for inconsistent input."""
    schemas = tool_schemas(tools)
    mode = tool_choice.mode
    if mode == runtime_pb2.TOOL_CHOICE_MODE_UNSPECIFIED:
        mode = runtime_pb2.TOOL_CHOICE_MODE_AUTO if schemas else runtime_pb2.TOOL_CHOICE_MODE_NONE
    if schemas and mode == runtime_pb2.TOOL_CHOICE_MODE_FUNCTION:
        name = tool_choice.function_name
        if name not in schemas:
            raise InvalidArgument(f"tool_choice names '{name}', which is not among the tools",
                                  param="tool_choice")
        return OutputPlan(OutputMode.TOOL_ARGUMENTS, schema=check_schema(schemas[name], param="tools"),
                          function_name=name)
    if mode in (runtime_pb2.TOOL_CHOICE_MODE_REQUIRED, runtime_pb2.TOOL_CHOICE_MODE_FUNCTION):
        if not schemas:
            raise InvalidArgument("tool_choice requires a tool but no tools were given",
                                  param="tool_choice")
        variants = [
            {"type": "object", "properties": {"name": {"const": n}, "arguments": check_schema(p, param="tools")},
             "required": ["name", "arguments"]}
            for n, p in schemas.items()
        ]
        schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
        return OutputPlan(OutputMode.TOOL_CALL, schema=schema)
    rf = response_format.type
    if rf == runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = _load_json(response_format.schema_json, "response_format json_schema")
        if not isinstance(schema, dict):
            raise InvalidArgument("response_format json_schema must be a JSON object",
                                  param="response_format")
        return OutputPlan(OutputMode.TEXT, schema=check_schema(schema, param="response_format"))
    if rf == runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return OutputPlan(OutputMode.TEXT, any_json=True)
    if schemas and mode == runtime_pb2.TOOL_CHOICE_MODE_AUTO:
        return OutputPlan(OutputMode.TOOL_AUTO)
    return OutputPlan(OutputMode.TEXT)


def tools_for_template(tools: list[runtime_pb2.Tool]) -> list[dict[str, Any]]:
    """Tools in the OpenAI shape chat templates expect."""
    schemas = tool_schemas(tools)
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": schemas[t.name]}} for t in tools]


def tools_system_prompt(tools: list[runtime_pb2.Tool]) -> str:
    """Instructions for models whose template has no tool support."""
    listing = "\n".join(json.dumps(t) for t in tools_for_template(tools))
    return (
        "You can call these functions:\n" + listing + "\nTo call a function, answer with only "
        'a JSON object {"name": <function name>, "arguments": <arguments object>}.'
    )


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


_TOOL_TAG = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def parse_tool_calls(text: str, names: set[str]) -> list[tuple[str, str]] | None:
    """(name, arguments JSON) pairs if `text` is a tool call to known tools, else None.

    Accepts a bare JSON object {"name", "arguments"} (or a list of them) and Hermes/Qwen-style
    <tool_call>...</tool_call> blocks, the two forms small models produce.
    """
    candidates: list[Any] = []
    blocks = _TOOL_TAG.findall(text)
    if blocks:
        for block in blocks:
            try:
                candidates.append(json.loads(block))
            except json.JSONDecodeError:
                return None
    else:
        stripped = text.strip()
        if not stripped.startswith(("{", "[")):
            return None
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return None
        candidates = value if isinstance(value, list) else [value]
    calls = []
    for c in candidates:
        if not isinstance(c, dict) or c.get("name") not in names:
            return None
        args = c.get("arguments", c.get("parameters", {}))
        calls.append((c["name"], args if isinstance(args, str) else json.dumps(args)))
    return calls or None


def could_be_tool_call(prefix: str) -> bool:
    """Whether streamed text so far may still become a tool call (so it must be held back)."""
    s = prefix.lstrip()
    return s == "" or s.startswith(("{", "[")) or "<tool_call>".startswith(s[:11]) or s.startswith("<tool_call>")
