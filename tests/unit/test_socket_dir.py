"""The worker socket directory is private: another local user can neither choose it in advance
nor swap it (they could then answer in a worker's place and read the daemon's prompts)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ohmygpu.core.errors import WorkerFailed
from ohmygpu.daemon.supervisor import check_private_dir, socket_dir, worker_environment

NOBODY = 65534


@pytest.fixture
def shallow_tmp() -> Iterator[Path]:
    """A temporary directory a socket fits in (pytest's own can be too deep under xdist)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="s-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_socket_dir_is_fresh_and_private_even_when_the_old_name_was_planted(shallow_tmp: Path,
                                                                            monkeypatch) -> None:
    tmp_path = shallow_tmp
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # The predictable name used before, created first by "another user": world-writable, and
    # one owned by someone else.
    home = Path("~/.ohmygpu").expanduser()
    planted = tmp_path / f"omg-{os.getuid()}-{hashlib.sha256(str(home).encode()).hexdigest()[:12]}"
    planted.mkdir()
    planted.chmod(0o777)
    other = tmp_path / "omg-other"
    other.mkdir()
    os.chown(other, NOBODY, NOBODY)
    made = {socket_dir() for _ in range(3)}
    assert len(made) == 3 and planted not in made and other not in made
    for path in made:
        st = os.lstat(path)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
        check_private_dir(path)  # accepted
        assert len(str(path / "w-0123abcd.sock")) < 100  # fits a Unix socket path


def test_a_temporary_directory_too_deep_for_a_socket_is_passed_over_for_tmp(tmp_path: Path, shallow_tmp: Path,
                                                                             monkeypatch) -> None:
    deep = tmp_path / ("d" * 60)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    path = socket_dir()
    try:
        assert path.parent == Path("/tmp") and len(str(path / "w-0123abcd.sock")) <= 107
        check_private_dir(path)
    finally:
        path.rmdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shallow_tmp))
    assert socket_dir().parent == shallow_tmp  # TMPDIR is honoured where a socket fits


@pytest.mark.parametrize("how", ["mode 0777", "mode 0750", "owned by nobody", "a symlink", "missing", "a file"])
def test_a_directory_not_private_to_us_is_refused(tmp_path: Path, how: str) -> None:
    path = tmp_path / "sockets"
    if how == "a symlink":
        target = tmp_path / "real"
        target.mkdir(mode=0o700)
        path.symlink_to(target)
    elif how == "a file":
        path.write_text("")
        path.chmod(0o600)
    elif how != "missing":
        path.mkdir(mode=0o700)
        if how.startswith("mode"):
            path.chmod(int(how.split()[1], 8))
        else:
            os.chown(path, NOBODY, NOBODY)
    with pytest.raises(WorkerFailed) as e:
        check_private_dir(path)
    assert str(tmp_path) not in e.value.message  # no local path in what clients see


def test_worker_environment_is_an_allow_list_without_secrets() -> None:
    parent = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "PYTHONPATH": "/x",
              "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0", "GGML_CUDA_NO_PINNED": "1",
              "OMG_TOKEN": "t", "OMG_ADMIN_TOKEN": "a", "HF_TOKEN": "h", "AWS_SECRET_ACCESS_KEY": "s",
              "OPENAI_API_KEY": "k", "GITHUB_TOKEN": "g", "OMG_HOME": "/h", "HF_ENDPOINT": "https://x",
              "CUDA_API_KEY": "c", "SOMETHING_ELSE": "1"}
    env = worker_environment(parent)
    assert env == {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "PYTHONPATH": "/x",
                   "OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": "0", "GGML_CUDA_NO_PINNED": "1",
                   "HF_HUB_OFFLINE": "1"}
