"""Derived models (core/derived.py) and the table of Ollama fields (gateway/ollama_fields.py):
pure rules, no daemon."""

from __future__ import annotations

import ollama._types as ollama_types
import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import derived
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.specs import spec_for
from ohmygpu.gateway import ollama_fields
from ohmygpu.gateway.body import Fields
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.registry import runtime_for

BASE = assets_pb2.InstallRecord(name="base", kind=assets_pb2.MODEL_KIND_LLM, format=assets_pb2.ARTIFACT_FORMAT_GGUF)


def test_sampling_defaults_mirror_sampling_params() -> None:
    # Copied by name: every field of the mirror must be SamplingParams' own, same number and type.
    theirs = run_spec_pb2.SamplingParams.DESCRIPTOR.fields_by_name
    for field in assets_pb2.SamplingDefaults.DESCRIPTOR.fields:
        assert field.name in theirs, field.name
        assert (theirs[field.name].number, theirs[field.name].type) == (field.number, field.type), field.name
    p = run_spec_pb2.SamplingParams(temperature=0.5, max_tokens=7, seed=-3, stop=["a", "b"])
    assert derived.sampling_params(assets_pb2.DerivedModel(params=derived.sampling_defaults(p))) == p


def test_merge_inherits_what_is_not_set_and_params_field_by_field() -> None:
    parent = assets_pb2.DerivedModel(base="x", system="s", template="t", context_length=512, license=["L"],
                                     messages=[assets_pb2.DerivedMessage(role="user", content="q")],
                                     params=assets_pb2.SamplingDefaults(temperature=0.1, max_tokens=5, stop=["a"]))
    child = derived.merged(parent, assets_pb2.DerivedModel(
        base="parent", system="s2", params=assets_pb2.SamplingDefaults(temperature=0.9, stop=["b", "c"])))
    assert (child.base, child.system, child.template, child.context_length, list(child.license)) == (
        "parent", "s2", "t", 512, ["L"])
    assert [m.content for m in child.messages] == ["q"]
    assert (round(child.params.temperature, 3), child.params.max_tokens, list(child.params.stop)) == (
        0.9, 5, ["b", "c"])
    made = derived.derive(BASE, "kid", assets_pb2.DerivedModel(system="hi"))
    assert made.name == "kid" and made.derived.base == "base" and made.derived.system == "hi"
    again = derived.derive(made, "kid", assets_pb2.DerivedModel(system="hello"))
    assert again.derived.base == "base" and again.derived.system == "hello"  # not made from itself


def test_conversation_puts_system_and_seeds_first() -> None:
    d = assets_pb2.DerivedModel(system="S", messages=[assets_pb2.DerivedMessage(role="user", content="q"),
                                                      assets_pb2.DerivedMessage(role="assistant", content="a")])

    def roles(messages: list[runtime_pb2.ChatMessage]) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in derived.conversation(messages, d)]

    hi = runtime_pb2.ChatMessage(role="user", content="hi")
    own = runtime_pb2.ChatMessage(role="system", content="mine")
    assert roles([hi]) == [("system", "S"), ("user", "q"), ("assistant", "a"), ("user", "hi")]
    assert roles([own, hi]) == [("system", "mine"), ("user", "q"), ("assistant", "a"), ("user", "hi")]
    assert derived.adds_to_chat(d) and not derived.adds_to_chat(assets_pb2.DerivedModel(template="t"))


@pytest.mark.parametrize(("d", "record", "param"), [
    (assets_pb2.DerivedModel(messages=[assets_pb2.DerivedMessage(role="tool", content="x")]), BASE, "messages[0].role"),
    (assets_pb2.DerivedModel(params=assets_pb2.SamplingDefaults(top_p=3)), BASE, "parameters.top_p"),
    (assets_pb2.DerivedModel(context_length=1 << 30), BASE, "parameters.num_ctx"),
    (assets_pb2.DerivedModel(template="{{ .Prompt }}"), BASE, "template"),
    (assets_pb2.DerivedModel(system="x" * (derived.MAX_TEXT_CHARS + 1)), BASE, "system"),
    (assets_pb2.DerivedModel(system="s"), assets_pb2.InstallRecord(
        name="e", kind=assets_pb2.MODEL_KIND_EMBEDDING, format=assets_pb2.ARTIFACT_FORMAT_GGUF), "system"),
    (assets_pb2.DerivedModel(), assets_pb2.InstallRecord(
        name="w", kind=assets_pb2.MODEL_KIND_WHISPER, format=assets_pb2.ARTIFACT_FORMAT_CT2), "from"),
])
def test_check_refuses_by_ollamas_field_name(d: assets_pb2.DerivedModel, record: assets_pb2.InstallRecord,
                                             param: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        derived.check(d, record, max_tokens_limit=1000)
    assert e.value.param == param


def test_a_derived_window_is_the_load_default_a_run_overrides() -> None:
    settings = Settings.load(environ={"OMG_CONTEXT_LENGTH": "2048"})
    record = assets_pb2.InstallRecord()
    record.CopyFrom(BASE)
    record.derived.context_length = 1024
    rt = runtime_for(record)
    assert spec_for(settings, record, rt).resources.context_length == 1024
    run = run_spec_pb2.RunSpec(model=assets_pb2.ModelRef(repo="base"),
                               resources=run_spec_pb2.Resources(context_length=512))
    assert spec_for(settings, record, rt, run).resources.context_length == 512


@pytest.mark.parametrize(("endpoint", "request_type"), [
    ("chat", ollama_types.ChatRequest), ("generate", ollama_types.GenerateRequest),
    ("embed", ollama_types.EmbedRequest), ("embeddings", ollama_types.EmbeddingsRequest),
    ("create", ollama_types.CreateRequest), ("pull", ollama_types.PullRequest),
    ("show", ollama_types.ShowRequest), ("delete", ollama_types.DeleteRequest),
    ("copy", ollama_types.CopyRequest), ("message", ollama_types.Message),
])
def test_every_field_the_client_sends_is_honoured_or_refused(endpoint: str, request_type: type) -> None:
    known = ollama_fields.HONOURED[endpoint] | set(ollama_fields.REFUSED.get(endpoint, {}))
    sent = {"from" if name == "from_" else name for name in request_type.model_fields}
    assert sent <= known, sent - known
    assert not ollama_fields.HONOURED[endpoint] & set(ollama_fields.REFUSED.get(endpoint, {}))


def test_every_option_the_client_knows_is_in_the_table() -> None:
    for key in ollama_types.Options.model_fields:
        try:
            ollama_fields.sampling_options(Fields({"options": {key: None}}), "options", 100)
        except InvalidArgument as e:  # pragma: no cover - a None value asks for nothing
            raise AssertionError(key) from e
        known = (key in ollama_fields._SAMPLING_KEYS or key == "num_ctx" or key in ollama_fields._NO_EFFECT
                 or key in ollama_fields._MOOT or key in ollama_fields._LOAD)
        assert known, key
