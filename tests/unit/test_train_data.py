"""The training dataset check: every bad dataset refused before a job, naming the line."""

from __future__ import annotations

import json

import pytest

from ohmygpu.core import train_data
from ohmygpu.core.errors import InvalidArgument


def _jsonl(*rows: object) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def test_three_shapes_parse() -> None:
    text = _jsonl({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "x"}]},
                  {"prompt": "2+2=", "completion": "4"}, {"text": "plain"})
    examples = train_data.parse(text + "\n\n")
    assert [e.kind for e in examples] == ["chat", "completion", "text"]
    # The chat is cut after its last assistant message (what follows teaches nothing).
    assert examples[0].messages[-1] == ("assistant", "hello") and len(examples[0].messages) == 3
    assert examples[1].prompt == "2+2=" and examples[1].target == "4"
    assert train_data.check(text) == train_data.Summary(3, ("chat", "completion", "text"))


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("\n  \n", "empty"),
    ('{"prompt": "a", "completion": "b"}\nnot json\n', "line 2: not JSON"),
    ('[1, 2]\n', "line 1: a JSON object is needed"),
    ('{"prompt": "a"}\n', 'line 1: missing or empty "completion"'),
    ('{"completion": "b"}\n', 'line 1: missing or non-string "prompt"'),
    ('{"text": "ok"}\n{"input": "a", "output": "b"}\n', 'line 2: missing fields'),
    ('{"messages": []}\n', "line 1: \"messages\" must be a non-empty list"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "line 1: no assistant message"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}\n', "role 'wizard'"),
    ('{"messages": [{"role": "user"}]}\n', 'needs a "role" and a string "content"'),
    ('{"text": ""}\n', "non-empty string"),
])
def test_bad_data_is_refused_naming_the_line(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        train_data.parse(text)
    assert words in e.value.message and e.value.param == "data"
    assert e.value.http_status == 400 and e.value.grpc_code == "INVALID_ARGUMENT"


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_data, "MAX_BYTES", 100)
    with pytest.raises(InvalidArgument, match="over"):
        train_data.parse('{"text": "x"}\n' * 20)
    monkeypatch.setattr(train_data, "MAX_BYTES", 1 << 20)
    monkeypatch.setattr(train_data, "MAX_EXAMPLES", 3)
    with pytest.raises(InvalidArgument, match="more than 3 examples"):
        train_data.parse('{"text": "x"}\n' * 4)
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        train_data.parse(b'{"text": "\xff"}\n')
