"""The store against damage and hostility on disk: a damaged index, damaged records, symlinks
planted in the HF cache, job progress that cannot be shown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import CorruptIndex, ModelNotFound
from ohmygpu.core.maintenance import remove_model, verify
from ohmygpu.core.store import ModelStore


def _store_with_models(home: Path, tmp: Path, names: tuple[str, ...] = ("a", "b", "c")) -> None:
    """An index holding records of a local model (as `omg model add` writes them) under `names`."""
    store = ModelStore(home)
    for i, name in enumerate(names):
        record = assets_pb2.InstallRecord(name=name, ref=assets_pb2.ModelRef(
            provider=assets_pb2.PROVIDER_LOCAL, repo=str(tmp / "m.gguf")), size_bytes=1000 + i)
        record.artifacts.add(filename="m.gguf", size=1000 + i, sha256="sha256:" + f"{i:064x}",
                             local_path=str(tmp / "m.gguf"), format=assets_pb2.ARTIFACT_FORMAT_GGUF)
        record.gguf.chat_template = "{{ messages }}" * 20  # rows of a realistic size
        store.put(record)
    store.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated-50", "truncated-4096", "truncated-half", "zeroed-page"])
def test_a_damaged_index_is_refused_at_open_saying_how_to_recover(tmp_path: Path, damage: str) -> None:
    home = tmp_path / "home"
    _store_with_models(home, tmp_path, names=tuple(f"m{i}" for i in range(100)))
    db = home / "store.db"
    data = db.read_bytes()
    assert len(data) > 8192
    if damage == "garbage":
        db.write_bytes(b"this is not sqlite " * 500)
    elif damage.startswith("truncated"):
        n = len(data) // 2 if damage.endswith("half") else int(damage.rsplit("-", 1)[1])
        db.write_bytes(data[:n])
    else:  # one page of the table overwritten with zeros
        db.write_bytes(data[:4096] + b"\0" * 4096 + data[8192:])
    with pytest.raises(CorruptIndex) as e:
        ModelStore(home)
    message = e.value.message
    assert "damaged" in message and f"mv {db} {db}.damaged" in message and "pull" in message, message
    assert "Traceback" not in message and "DatabaseError" not in message


def test_an_empty_index_file_is_a_fresh_store(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "store.db").write_bytes(b"")
    assert ModelStore(home).list() == []


@pytest.mark.parametrize("bad", [b"\xff\xff\xff\xff", b"\x0a\x05ab", "a text value", 12345, None])
def test_one_damaged_record_is_skipped_and_reported(tmp_path: Path, bad: object) -> None:
    home = tmp_path / "home"
    _store_with_models(home, tmp_path)
    with sqlite3.connect(home / "store.db") as db:
        if bad is None:  # a readable record filed under another name
            blob = db.execute("SELECT record FROM models WHERE name = 'a'").fetchone()[0]
            db.execute("UPDATE models SET record = ? WHERE name = 'b'", (blob,))
        else:
            db.execute("UPDATE models SET record = ? WHERE name = 'b'", (bad,))
    store = ModelStore(home)
    assert [r.name for r in store.list()] == ["a", "c"]  # the others still list
    assert store.damaged() == ["b"]
    with pytest.raises(CorruptIndex, match="'b' is damaged.*omg model rm b"):
        store.get("b")
    assert store.get("a").name == "a"
    damaged = [c.model for c in verify(store) if "damaged" in c.problem]  # the files are fake
    assert damaged == ["b"]
    assert remove_model(store, "b", tmp_path / "hf") == 0  # rm forgets it
    with pytest.raises(ModelNotFound):
        store.get("b")
    assert store.damaged() == [] and len(store.list()) == 2


def test_a_damaged_last_used_value_is_a_damaged_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _store_with_models(home, tmp_path)
    with sqlite3.connect(home / "store.db") as db:
        db.execute("UPDATE models SET last_used = 'yesterday' WHERE name = 'c'")
    store = ModelStore(home)
    assert [r.name for r in store.list()] == ["a", "b"] and store.damaged() == ["c"]
