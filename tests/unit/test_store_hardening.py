"""The store against damage and hostility on disk: a damaged index, damaged records, symlinks
planted in the HF cache, job progress that cannot be shown."""

from __future__ import annotations

import shutil
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


# -- gc and rm never delete outside the store ----------------------------------------------------

REPO = "org/model"
SHA = "a" * 64
COMMIT = "c" * 40


def _pulled(store: ModelStore, cache: Path, name: str = "pulled", sha: str = SHA,
            data: bytes = b"weights" * 100) -> Path:
    """A model pulled into `cache` as pull.py lays it out: blob, snapshot link, record."""
    from ohmygpu.core import hfcache

    blob = hfcache.blob_path(cache, REPO, sha)
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = hfcache.link_snapshot(cache, REPO, COMMIT, "m.gguf", sha)
    record = assets_pb2.InstallRecord(name=name, ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_HF, repo=REPO),
                                      size_bytes=len(data))
    record.artifacts.add(filename="m.gguf", size=len(data), sha256=f"sha256:{sha}", etag=sha,
                         local_path=str(link), format=assets_pb2.ARTIFACT_FORMAT_GGUF)
    store.put(record)
    return blob


@pytest.fixture()
def world(tmp_path: Path) -> tuple[ModelStore, Path, Path]:
    """A store, its HF cache, and a directory outside both holding files that must survive."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    for p in (outside / "precious.txt", outside / "dir" / "inner.txt", outside / "dir" / f"{SHA}"):
        p.write_bytes(b"do not delete")
    return ModelStore(tmp_path / "home"), tmp_path / "hf", outside


def _survived(outside: Path) -> None:
    assert sorted(p.name for p in outside.rglob("*")) == sorted(["precious.txt", "dir", "inner.txt", SHA])
    assert all(p.read_bytes() == b"do not delete" for p in outside.rglob("*") if p.is_file())


def test_gc_deletes_unreferenced_blobs_but_follows_no_link_out(world: tuple[ModelStore, Path, Path]) -> None:
    from ohmygpu.core.maintenance import collect_garbage

    store, cache, outside = world
    _pulled(store, cache)
    blobs = cache / "models--org--model" / "blobs"
    stale = blobs / ("b" * 64)
    stale.write_bytes(b"nobody uses me")  # the control: a real orphan blob, which gc must remove
    (blobs / ("d" * 64)).symlink_to(outside / "precious.txt")  # a blob that is a link out
    (blobs / ("e" * 64 + ".omg-partial")).symlink_to(outside / "dir" / "inner.txt")
    (blobs / ("f" * 64 + ".omg-partial")).write_bytes(b"abandoned")
    (blobs / ("f" * 64 + ".omg-partial.lock")).symlink_to(outside / "precious.txt")
    # A whole repo, and a repo's blobs directory, that are links to a directory outside.
    (cache / "models--evil--repo").symlink_to(outside / "dir", target_is_directory=True)
    (cache / "models--evil--blobs").mkdir()
    (cache / "models--evil--blobs" / "blobs").symlink_to(outside / "dir", target_is_directory=True)
    report = collect_garbage(store, cache, dry_run=False)
    _survived(outside)
    assert not stale.exists() and "models--org--model/blobs/" + "b" * 64 in report.removed
    assert (blobs / SHA).exists()  # referenced: kept
    assert all("evil" not in r for r in report.removed), report.removed


def test_rm_follows_no_planted_link_out(world: tuple[ModelStore, Path, Path]) -> None:
    store, cache, outside = world
    blob = _pulled(store, cache, name="control")
    assert remove_model(store, "control", cache) > 0 and not blob.exists()  # the control: rm does delete
    # The snapshot link swapped for one to a file outside.
    _pulled(store, cache, name="swapped-link")
    link = cache / "models--org--model" / "snapshots" / COMMIT / "m.gguf"
    (cache / "models--org--model" / "blobs" / SHA).unlink()
    link.unlink()
    link.symlink_to(outside / "precious.txt")
    remove_model(store, "swapped-link", cache)
    _survived(outside)
    # The snapshot directory, then the blobs directory, swapped for links to a directory outside.
    for swapped in ("snapshots", "blobs"):
        _pulled(store, cache, name=f"swapped-{swapped}")
        folder = cache / "models--org--model" / swapped
        shutil.rmtree(folder)
        folder.symlink_to(outside / "dir", target_is_directory=True)
        if swapped == "snapshots":
            (outside / "dir" / COMMIT).mkdir()
            (outside / "dir" / COMMIT / "m.gguf").symlink_to(outside / "dir" / SHA)
        remove_model(store, f"swapped-{swapped}", cache)
        if swapped == "snapshots":
            shutil.rmtree(outside / "dir" / COMMIT)
        _survived(outside)
        folder.unlink()


def test_rm_of_a_tampered_record_deletes_nothing_outside(world: tuple[ModelStore, Path, Path]) -> None:
    store, cache, outside = world
    _pulled(store, cache, name="tampered")
    record = store.get("tampered")
    record.artifacts[0].local_path = str(outside / "dir" / SHA)  # a record pointing outside the cache
    record.artifacts[0].etag = "../../../outside/dir/" + SHA
    store.put(record)
    remove_model(store, "tampered", cache)
    _survived(outside)
