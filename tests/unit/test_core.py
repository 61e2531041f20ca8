"""Pure logic of core/: digests, names, settings, GGUF headers, the store index."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import errors
from ohmygpu.core.digests import hex_of, parse_digest, sha256_file
from ohmygpu.core.gguf import read_header
from ohmygpu.core.names import default_name_for, parse_model_name
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore

GOOD = "sha256:" + "ab" * 32


@pytest.mark.parametrize("bad", [
    "sha256:" + "AB" * 32, "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha256-" + "a" * 64,
    "sha256:../../etc/passwd", "sha256:" + "a" * 63 + "\x00", "", "md5:" + "a" * 32,
    "sha256:" + "a" * 64 + "\n",
])
def test_digest_must_be_exact(bad: str) -> None:
    with pytest.raises(errors.InvalidDigest):
        parse_digest(bad)


def test_digest_accepts_valid_and_hashes(tmp_path: Path) -> None:
    assert parse_digest(GOOD) == GOOD and hex_of(GOOD) == "ab" * 32
    f = tmp_path / "x"
    f.write_bytes(b"hello")
    assert sha256_file(f) == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.mark.parametrize("bad", ["", "../x", "a/../b", "/abs", "a\\b", "a\x00b", "x" * 300, "a//b",
                                 ".hidden", "a/./b", "C:\\x", "name with space"])
def test_bad_model_names(bad: str) -> None:
    with pytest.raises(errors.InvalidName):
        parse_model_name(bad)


def test_good_model_names() -> None:
    for good in ("smollm2", "smollm2:135m", "hf.co/org/repo:Q4_K_M", "a.b-c_d"):
        assert parse_model_name(good) == good
    assert default_name_for("SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"


def test_errors_inherit_builtins() -> None:
    assert issubclass(errors.ModelNotFound, LookupError)
    assert issubclass(errors.InvalidArgument, ValueError)
    assert errors.ModelNotFound("x").http_status == 404
    assert errors.MissingExtra("llamacpp", "llamacpp").message.endswith("pip install 'ohmygpu[llamacpp]'")


def test_settings_precedence(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('context_length = 1024\nmax_body_mb = 5\n')
    env = {"OMG_HOME": str(tmp_path), "OMG_MAX_BODY_MB": "7"}
    s = Settings.load(environ=env, overrides={"http_addr": "127.0.0.1:1"})
    assert s.context_length == 1024 and s.max_body_mb == 7 and s.http_addr == "127.0.0.1:1"
    sources = dict(s.sources)
    assert sources["context_length"].startswith("file") and sources["max_body_mb"] == "env OMG_MAX_BODY_MB"
    assert sources["http_addr"] == "flag" and sources["grpc_addr"] == "default"
    assert s.grpc_addr == "127.0.0.1:11435" and s.num_threads >= 1
    with pytest.raises(errors.InvalidArgument, match="max_body_mb"):
        Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_MAX_BODY_MB": "lots"})
    assert {r["env"] for r in s.describe()} >= {"OMG_HOME", "OMG_HTTP_ADDR", "OMG_GRPC_ADDR"}


def test_gguf_header_of_shipped_model(gguf_path: Path) -> None:
    h = read_header(gguf_path)
    assert h.architecture == "llama" and h.quantization == "Q4_1"
    assert h.arch_value("context_length") == 8192
    assert 130e6 < h.parameter_count < 140e6 and h.tensor_count > 100
    assert "im_start" in str(h.metadata["tokenizer.chat_template"])


def _gguf(kv_count: int, body: bytes, tensors: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, kv_count) + body


def _s(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


@pytest.mark.parametrize("data,why", [
    (b"NOPE" + b"\x00" * 20, "magic"),
    (b"GGUF" + struct.pack("<I", 99) + b"\x00" * 16, "version"),
    (_gguf(1 << 40, b""), "metadata count"),
    (_gguf(0, b"", tensors=1 << 40), "tensor count"),
    (_gguf(1, struct.pack("<Q", 1 << 60)), "string length"),
    (_gguf(1, _s("k") + struct.pack("<I", 9) + struct.pack("<IQ", 4, 1 << 40)), "array length"),
    (_gguf(1, _s("k") + struct.pack("<I", 77)), "unknown value type"),
    (_gguf(2, _s("k") + struct.pack("<I", 4) + struct.pack("<I", 1)), "truncated"),
])
def test_gguf_reader_rejects_hostile_headers(tmp_path: Path, data: bytes, why: str) -> None:
    f = tmp_path / "bad.gguf"
    f.write_bytes(data)
    with pytest.raises(errors.InvalidModelFile, match=why):
        read_header(f)


def test_store_add_get_delete_and_dedup(tmp_path: Path, gguf_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    rec = store.add_local(gguf_path, name="smol")
    assert rec.format == assets_pb2.ARTIFACT_FORMAT_GGUF and rec.kind == assets_pb2.MODEL_KIND_LLM
    assert rec.artifacts[0].local_path == str(gguf_path)  # registered in place, not copied
    parse_digest(rec.artifacts[0].sha256)
    assert rec.gguf.quantization == "Q4_1" and rec.gguf.context_length == 8192
    assert store.add_local(gguf_path, name="smol").artifacts[0].sha256 == rec.artifacts[0].sha256
    store.add_local(gguf_path, name="alias")
    assert [r.name for r in store.list()] == ["alias", "smol"]
    store.delete("alias")
    with pytest.raises(errors.ModelNotFound):
        store.get("alias")
    with pytest.raises(errors.ModelNotFound):
        store.delete("alias")
    assert gguf_path.exists()
    store.close()
    # The index survives a restart.
    assert ModelStore(tmp_path / "home").get("smol").artifacts[0].sha256 == rec.artifacts[0].sha256


def test_store_refuses_non_gguf_without_revealing_which(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "home")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    messages = set()
    for candidate in (text, tmp_path / "missing.gguf", tmp_path, Path("relative.gguf")):
        with pytest.raises(errors.InvalidModelFile) as info:
            store.add_local(candidate, name="x")
        messages.add(info.value.message.replace(candidate.name or str(candidate), "NAME"))
    # Missing, a directory, a relative path and a non-GGUF file all get the same answer.
    assert len(messages) == 1, messages
    assert store.list() == []
    assert str(tmp_path) not in next(iter(messages))


def test_disk_space_is_checked_before_download(tmp_path: Path) -> None:
    from ohmygpu.core.download import check_space
    from ohmygpu.core.errors import InsufficientSpace

    check_space(tmp_path, 1)
    with pytest.raises(InsufficientSpace, match="GB"):
        check_space(tmp_path, 1 << 60)


@pytest.mark.parametrize("source,expected", [
    ("org/repo", ("org/repo", "", "")),
    ("org/repo@v1.0", ("org/repo", "v1.0", "")),
    ("hf.co/org/repo:Q4_K_M", ("org/repo", "", "Q4_K_M")),
    ("huggingface.co/org/repo@main:q8_0", ("org/repo", "main", "q8_0")),
    # Links copied from the hub's web pages.
    ("https://huggingface.co/org/repo", ("org/repo", "", "")),
    ("https://huggingface.co/org/repo/tree/v1.0", ("org/repo", "v1.0", "")),
    ("https://huggingface.co/org/repo/blob/main/model.Q4_K_M.gguf", ("org/repo", "main", "Q4_K_M")),
    ("https://hf.co/org/repo/resolve/main/m-Q8_0-00001-of-00003.gguf?download=true", ("org/repo", "main", "Q8_0")),
])
def test_parse_source(source: str, expected: tuple[str, str, str]) -> None:
    from ohmygpu.core.names import parse_source

    assert parse_source(source) == expected


def test_parse_source_link_to_a_file_without_a_quantization() -> None:
    from ohmygpu.core.names import parse_source

    with pytest.raises(errors.InvalidName, match="--include 'README.md'"):
        parse_source("https://huggingface.co/org/repo/blob/main/README.md")


@pytest.mark.parametrize("bad", ["../x", "org/../x", "org/repo@../../etc", "org/repo@/abs", "org", "a/b/c",
                                 "org/repo:Q4/..", "org/re\x00po", "C:\\x/y",
                                 "https://huggingface.co/org/repo/tree/..%2F..", "https://huggingface.co/org/../tree/main"])
def test_parse_source_rejects_traversal(bad: str) -> None:
    from ohmygpu.core.names import parse_source

    with pytest.raises(errors.InvalidName):
        parse_source(bad)


@pytest.mark.parametrize("bad", ["../a", "a/../b", "/etc/passwd", "a\\b", "C:/x", "a\x00", "", "a//b", "./a"])
def test_repo_paths_from_the_hub_are_validated(bad: str) -> None:
    from ohmygpu.core.names import parse_repo_path

    with pytest.raises(errors.InvalidName):
        parse_repo_path(bad)


def test_hf_cache_links_stay_inside(tmp_path: Path) -> None:
    from ohmygpu.core import hfcache

    sha = "ab" * 32
    commit = "cd" * 20
    blob = hfcache.blob_path(tmp_path, "org/repo", sha)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    link = hfcache.link_snapshot(tmp_path, "org/repo", commit, "sub/dir/file.bin", sha)
    assert link.is_symlink() and link.read_bytes() == b"x" and not Path(os.readlink(link)).is_absolute()
    assert hfcache.inside(tmp_path, link)
    with pytest.raises(errors.InvalidName):
        hfcache.blob_path(tmp_path, "org/repo", "../../../etc/passwd")
    outside = tmp_path / "evil-link"
    outside.symlink_to("/etc")
    assert not hfcache.inside(tmp_path, outside / "passwd")


@pytest.mark.parametrize("value,seconds", [
    ("5m", 300.0), ("30s", 30.0), ("1h30m", 5400.0), ("500ms", 0.5), ("0", 0.0), ("0s", 0.0), (10, 10.0),
    ("-1", None), ("-1m", None), (-5, None), ("2.5", 2.5),
])
def test_keep_alive_durations(value: object, seconds: float | None) -> None:
    from ohmygpu.core.durations import parse_keep_alive

    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("bad", ["forever", "5 m", "m5", "", "1d", "--1", "inf", "nan", "+5"])
def test_keep_alive_rejects(bad: str) -> None:
    from ohmygpu.core.durations import parse_keep_alive

    with pytest.raises(errors.InvalidArgument, match="keep_alive"):
        parse_keep_alive(bad)
