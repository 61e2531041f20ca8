"""Two daemons sharing one Hugging Face cache publish the same snapshot links and refs at once
(tests/e2e/test_pull.py's two-daemon pull failed on it now and then: "No such file or directory"
when both used one temporary name). Processes, not threads: the race is between daemons."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from ohmygpu.core import hfcache

REPO, COMMIT, ETAG = "org/model", "a" * 40, "b" * 64


def _publish_many(cache: str) -> None:
    for _ in range(300):
        hfcache.link_snapshot(Path(cache), REPO, COMMIT, "model.gguf", ETAG)
        hfcache.write_ref(Path(cache), REPO, "main", COMMIT)


def test_two_processes_publish_the_same_link_and_ref_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_publish_many, args=(str(tmp_path),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    link = hfcache.snapshot_path(tmp_path, REPO, COMMIT, "model.gguf")
    assert link.is_symlink() and Path(link.parent, link.readlink()).resolve() == hfcache.blob_path(tmp_path, REPO, ETAG)
    assert (hfcache.repo_folder(tmp_path, REPO) / "refs" / "main").read_text() == COMMIT
    leftovers = [p.name for p in hfcache.repo_folder(tmp_path, REPO).rglob("*") if ".omg-" in p.name]
    assert leftovers == []
