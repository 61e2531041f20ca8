"""The llama.cpp worker's pure parts: template sandbox, output plans, tool-call parsing, stops."""

from __future__ import annotations

import json
import time

import pytest
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.llamacpp import structured
from ohmygpu.runtimes.llamacpp.generation import _held_back
from ohmygpu.runtimes.llamacpp.template import CHATML, ChatTemplate, TemplateFailed


def test_chatml_renders() -> None:
    t = ChatTemplate(CHATML, bos_token="", eos_token="", timeout_s=1)
    out = t.render([{"role": "user", "content": "hi"}])
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_template_sandbox_blocks_code_execution() -> None:
    # The payload of llama-cpp-python CVE-2024-34359.
    evil = ("{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
            "{{ x()._module.__builtins__['__import__']('os').popen('echo pwned').read() }}"
            "{% endif %}{% endfor %}")
    t = ChatTemplate(evil, bos_token="", eos_token="", timeout_s=1)
    with pytest.raises(TemplateFailed):
        t.render([{"role": "user", "content": "hi"}])


def test_template_loop_is_cut_by_deadline() -> None:
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    t = ChatTemplate(slow, bos_token="", eos_token="", timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(TemplateFailed, match="longer than"):
        t.render([{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 3


def test_template_raise_exception_is_a_clear_error() -> None:
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}", bos_token="", eos_token="", timeout_s=1)
    with pytest.raises(TemplateFailed, match="roles must alternate"):
        t.render([])


def _tool(name: str) -> runtime_pb2.Tool:
    return runtime_pb2.Tool(name=name, parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))


def test_plans() -> None:
    none = runtime_pb2.ToolChoice()
    assert structured.plan_output(runtime_pb2.ResponseFormat(), [], none).mode is structured.OutputMode.TEXT
    p = structured.plan_output(runtime_pb2.ResponseFormat(type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT), [], none)
    assert p.any_json
    schema = {"type": "object"}
    p = structured.plan_output(runtime_pb2.ResponseFormat(
        type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json=json.dumps(schema)), [], none)
    assert p.schema == schema
    forced = runtime_pb2.ToolChoice(mode=runtime_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="w")
    p = structured.plan_output(runtime_pb2.ResponseFormat(), [_tool("w")], forced)
    assert p.mode is structured.OutputMode.TOOL_ARGUMENTS and p.function_name == "w"
    p = structured.plan_output(runtime_pb2.ResponseFormat(), [_tool("a"), _tool("b")],
                               runtime_pb2.ToolChoice(mode=runtime_pb2.TOOL_CHOICE_MODE_REQUIRED))
    assert p.mode is structured.OutputMode.TOOL_CALL and len(p.schema["anyOf"]) == 2
    assert structured.plan_output(runtime_pb2.ResponseFormat(), [_tool("a")], none).mode is structured.OutputMode.TOOL_AUTO
    with pytest.raises(InvalidArgument, match="not among the tools"):
        structured.plan_output(runtime_pb2.ResponseFormat(), [_tool("a")],
                               runtime_pb2.ToolChoice(mode=runtime_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name="b"))
    with pytest.raises(InvalidArgument, match="given twice"):
        structured.plan_output(runtime_pb2.ResponseFormat(), [_tool("a"), _tool("a")], none)
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        structured.plan_output(runtime_pb2.ResponseFormat(
            type=runtime_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, schema_json="{nope"), [], none)


def test_parse_tool_calls() -> None:
    names = {"get_weather"}
    assert structured.parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}', names) == [
        ("get_weather", '{"city": "Paris"}')]
    tagged = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    assert structured.parse_tool_calls(tagged, names) == [("get_weather", '{"city": "Oslo"}')]
    assert structured.parse_tool_calls("Paris is sunny.", names) is None
    assert structured.parse_tool_calls('{"name": "other", "arguments": {}}', names) is None
    assert structured.could_be_tool_call("  {") and structured.could_be_tool_call("<tool")
    assert not structured.could_be_tool_call("Hello")


def test_stop_sequence_hold_back() -> None:
    assert _held_back("hello wor", ["world"]) == 3
    assert _held_back("hello", ["xyz"]) == 0
    assert _held_back("a<|im", ["<|im_end|>"]) == 4
