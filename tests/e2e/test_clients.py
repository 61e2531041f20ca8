"""The generated clients in other languages (clients/ts, clients/go) against a live daemon:
list models, stream a chat, follow a pull, read events, a status for an unknown model. Each
client's own test runner (node --test, go test) does the calls; this starts the daemon and
says where it is (OMG_HOST), and checks that the committed generated code is current."""

from __future__ import annotations

import filecmp
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.hub_daemon import PULL_REPO, hub_daemon
from tests.helpers import DaemonProc, new_daemon, terminate

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TS = ROOT / "clients" / "ts"
GO = ROOT / "clients" / "go"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    with hub_daemon(tmp_path_factory.mktemp("clients"), gguf_path) as (d, _):
        yield d


def _env(d: DaemonProc, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMG_")}
    return {**env, "OMG_HOST": d.grpc_addr, "OMG_TEST_MODEL": "smollm2", "OMG_TEST_PULL_REPO": PULL_REPO,
            **extra}


def _tree(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def _same_tree(want: Path, have: Path) -> list[str]:
    a, b = _tree(want), _tree(have)
    return sorted(set(a) ^ set(b)) + sorted(n for n in set(a) & set(b) if not filecmp.cmp(a[n], b[n], shallow=False))


def _need(path: Path, hint: str) -> None:
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: {hint}")


def test_typescript_generated_code_is_current(tmp_path: Path) -> None:
    _need(TS / "node_modules/.bin/buf", "run `npm ci` in clients/ts")
    r = subprocess.run([str(TS / "node_modules/.bin/buf"), "generate", "../..", "--template", "buf.gen.yaml",
                        "-o", str(tmp_path)], cwd=TS, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    stale = _same_tree(tmp_path / "src/gen", TS / "src/gen")
    assert not stale, f"clients/ts/src/gen is stale (run `npm run generate` in clients/ts): {stale}"


def test_typescript_client(served: DaemonProc) -> None:
    _need(TS / "node_modules", "run `npm ci` in clients/ts")
    r = subprocess.run(["npm", "test", "--silent"], cwd=TS, env=_env(served), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "fail 0" in r.stdout and "pass 5" in r.stdout, r.stdout[-3000:]


def test_go_generated_code_is_current(tmp_path: Path) -> None:
    _need(GO / "generate.sh", "clients/go")
    if shutil.which("go") is None:
        pytest.fail("go is not installed: scripts/setup.sh installs golang-go and Debian's grpc/protobuf for Go")
    r = subprocess.run(["bash", "generate.sh", str(tmp_path)], cwd=GO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    stale = _same_tree(tmp_path / "gen", GO / "gen")
    assert not stale, f"clients/go/gen is stale (run clients/go/generate.sh): {stale}"


def test_go_client(served: DaemonProc) -> None:
    if shutil.which("go") is None:
        pytest.fail("go is not installed: scripts/setup.sh installs golang-go and Debian's grpc/protobuf for Go")
    r = subprocess.run(["bash", "test.sh"], cwd=GO, env=_env(served), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert r.stdout.count("--- PASS") == 5 and "--- SKIP" not in r.stdout, r.stdout[-3000:]


def _self_signed(tmp: Path) -> Path:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert


def test_clients_over_tls_with_a_token(tmp_path: Path, gguf_path: Path) -> None:
    """grpcs:// in OMG_HOST, the daemon's CA in OMG_TLS_CA, OMG_TOKEN: both clients list models
    and get NOT_FOUND through a daemon that refuses calls without the token."""
    cert = _self_signed(tmp_path)
    d = new_daemon(tmp_path, token="s3cret", extra_env={
        "OMG_TLS_CERT": str(cert), "OMG_TLS_KEY": str(tmp_path / "key.pem")})
    d.home.mkdir(parents=True)
    d.proc = subprocess.Popen([sys.executable, "-m", "ohmygpu.cli.main", "serve"], env=d.env,
                              stdout=subprocess.DEVNULL, stderr=open(d.home / "serve.log", "wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert d.proc.poll() is None and time.monotonic() < deadline, (d.home / "serve.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", d.grpc_port), timeout=0.2).close()
                socket.create_connection(("127.0.0.1", d.http_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        remote = {"OMG_HOST": f"grpcs://localhost:{d.grpc_port}", "OMG_TLS_CA": str(cert), "OMG_TOKEN": "s3cret"}
        added = subprocess.run([sys.executable, "-m", "ohmygpu.cli.main", "model", "add", str(gguf_path),
                                "--name", "smollm2"], env={**d.env, **remote}, capture_output=True, text=True,
                               timeout=60)
        assert added.returncode == 0, added.stderr
        env = {**_env(d), **remote}
        r = subprocess.run(f"{TS}/node_modules/.bin/tsc -p . && node --test --test-name-pattern='list models|unknown'"
                           " dist/test/", shell=True, cwd=TS, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "pass 2" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        if shutil.which("go") is not None:
            r = subprocess.run(["bash", "test.sh", "-run", "TestListModels|TestUnknownModel"], cwd=GO, env=env,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0 and r.stdout.count("--- PASS") == 2, r.stdout[-3000:] + r.stderr[-2000:]
        # Without the token, the same client is refused with a status saying so.
        env["OMG_TOKEN"] = ""
        r = subprocess.run("node --test --test-name-pattern='list models' dist/test/", shell=True, cwd=TS, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "OMG_TOKEN" in r.stdout, r.stdout[-2000:]
    finally:
        terminate(d.proc)
