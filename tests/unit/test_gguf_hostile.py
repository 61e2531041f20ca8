"""Hostile copies of the shipped SmolLM2 GGUF, refused when added: each is built from the real
file by byte edits at the offsets llama.cpp's own `gguf` reader reports, and each gets "the file
is not a loadable model: ..." from `omg model add`'s code path, with no path and no exception
class in the message."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from ohmygpu.core.errors import UnloadableModel
from ohmygpu.core.store import ModelStore
from tests.helpers import gguf_with_uint32, smollm2_path


@pytest.fixture(scope="module")
def original() -> bytes:
    return smollm2_path().read_bytes()


@pytest.fixture(scope="module")
def layout() -> dict[str, object]:
    """Where things are in the original file: each field's parts as (offset, size) pairs."""
    import gguf

    reader = gguf.GGUFReader(smollm2_path())

    def parts(field: object) -> list[tuple[int, int]]:
        out, pos = [], field.offset  # type: ignore[attr-defined]
        for p in field.parts:  # type: ignore[attr-defined]
            out.append((pos, p.nbytes))
            pos += p.nbytes
        return out

    return {"fields": {name: parts(f) for name, f in reader.fields.items()},
            "tensors": [parts(t.field) for t in reader.tensors],
            "template": reader.fields["tokenizer.chat_template"].contents()}


def _put(data: bytes, at: tuple[int, int], value: bytes) -> bytes:
    offset, size = at
    assert len(value) == size
    return data[:offset] + value + data[offset + size:]


def _with_template(data: bytes, layout: dict, template: str) -> bytes:
    """The file with another chat template (a string of another length): the header is
    re-spliced and the tensor data realigned, as a GGUF writer would lay it out."""
    from ohmygpu.core.gguf import read_header

    field = layout["fields"]["tokenizer.chat_template"]
    start, end = field[0][0], field[-1][0] + field[-1][1]
    key = b"tokenizer.chat_template"
    encoded = template.encode()
    new_field = struct.pack("<Q", len(key)) + key + struct.pack("<IQ", 8, len(encoded)) + encoded
    h = read_header(smollm2_path())
    out = data[:start] + new_field + data[end:h.info_end]
    out += b"\0" * (-len(out) % 32)
    return out + data[h.data_offset:]


def _tensor(layout: dict, index: int, part: int) -> tuple[int, int]:
    # A tensor info's parts: name length, name, n_dims, dims, type, offset.
    return layout["tensors"][index][part]


CASES: dict[str, tuple[Callable[[bytes, dict], bytes], str]] = {
    "truncated-data": (lambda d, L: d[: len(d) // 2], "past the end of the file"),
    "truncated-header": (lambda d, L: d[:1_000_000], "truncated"),
    "shape-0": (lambda d, L: _put(d, _tensor(L, 0, 3), struct.pack("<QQ", 0, 49152)), "dimension of 0"),
    "shape-2^40": (lambda d, L: _put(d, _tensor(L, 0, 3), struct.pack("<QQ", 576, 1 << 40)), "past the end"),
    "offset-past-end": (lambda d, L: _put(d, _tensor(L, -1, 5), struct.pack("<Q", 1 << 40)), "past the end"),
    "offset-unaligned": (lambda d, L: _put(d, _tensor(L, 1, 5), struct.pack("<Q", 4 * 1024 * 1024 + 8)),
                         "not aligned"),
    "unknown-tensor-type": (lambda d, L: _put(d, _tensor(L, 0, 4), struct.pack("<I", 99)), "unknown type 99"),
    "alignment-0": (lambda d, L: gguf_with_uint32(smollm2_path(), "general.alignment", 0), "alignment 0"),
    "alignment-3": (lambda d, L: gguf_with_uint32(smollm2_path(), "general.alignment", 3), "alignment 3"),
    "alignment-2^30": (lambda d, L: gguf_with_uint32(smollm2_path(), "general.alignment", 1 << 30),
                       "alignment 1073741824"),
    "unknown-architecture": (lambda d, L: _put(d, L["fields"]["general.architecture"][-1], b"zzzzz"),
                             "unknown architecture 'zzzzz'"),
    "unknown-tokenizer": (lambda d, L: _put(d, L["fields"]["tokenizer.ggml.model"][-1], b"zzzz"),
                          "unknown tokenizer 'zzzz'"),
    "eos-uint32-max": (lambda d, L: _put(d, L["fields"]["tokenizer.ggml.eos_token_id"][-1],
                                         struct.pack("<I", 0xFFFFFFFF)), "eos token id 4294967295"),
    "eos-minus-1": (lambda d, L: _put(d, (L["fields"]["tokenizer.ggml.eos_token_id"][-2][0], 8),
                                      struct.pack("<Ii", 5, -1)), "eos token id -1"),  # type int32, value -1
    "context-2^32-1": (lambda d, L: _put(d, L["fields"]["llama.context_length"][-1],
                                         struct.pack("<I", 0xFFFFFFFF)), "context length 4294967295"),
    "template-syntax-error": (lambda d, L: _with_template(d, L, "{% for m in messages %}{{ m.content }"),
                              "chat template does not compile"),
    "template-unclosed-block": (lambda d, L: _with_template(d, L, "{% if messages %}hello"),
                                "chat template does not compile"),
    "template-deep-nesting": (lambda d, L: _with_template(d, L, "{{ " + "(" * 50_000 + "1" + ")" * 50_000 + " }}"),
                              "chat template does not compile"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_gguf_is_refused_at_add_time(tmp_path: Path, original: bytes, layout: dict, case: str) -> None:
    build, expected = CASES[case]
    path = tmp_path / "hostile" / "model.gguf"
    path.parent.mkdir()
    path.write_bytes(build(original, layout))
    store = ModelStore(tmp_path / "home")
    with pytest.raises(UnloadableModel) as e:
        store.add_local(path, name="hostile")
    message = e.value.message
    assert message.startswith("the file is not a loadable model: ") and expected in message, message
    assert str(tmp_path) not in message and "Error" not in message and "Traceback" not in message, message
    assert store.list() == []


def test_the_unmodified_file_and_its_template_pass(tmp_path: Path, original: bytes, layout: dict) -> None:
    """The control: the same edits' machinery, with nothing hostile, makes a model that adds."""
    path = tmp_path / "model.gguf"
    path.write_bytes(_with_template(original, layout, layout["template"]))
    assert ModelStore(tmp_path / "home").add_local(path, name="fine").gguf.architecture == "llama"


def test_ggml_type_table_matches_llama_cpp() -> None:
    import gguf

    from ohmygpu.core.gguf_check import ARCHITECTURES, GGML_TYPES

    theirs = {int(t): gguf.GGML_QUANT_SIZES[t] for t in gguf.GGMLQuantizationType}
    assert all(theirs[k] == v for k, v in GGML_TYPES.items()), {k: (v, theirs.get(k)) for k, v in GGML_TYPES.items()}
    assert "llama" in ARCHITECTURES and set(ARCHITECTURES) <= set(gguf.MODEL_ARCH_NAMES.values())
