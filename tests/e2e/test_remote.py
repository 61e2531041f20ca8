"""A daemon reachable from other machines: TLS on gRPC and HTTP, a token, and clients pointed
at it with OMG_HOST / --host."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers import DaemonProc, free_port, new_daemon

pytestmark = pytest.mark.slow


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_and_token_for_a_remote_daemon(tmp_path: Path, gguf_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    grpc_port, http_port = free_port(), free_port()
    d = DaemonProc(home=tmp_path / "home", http_port=http_port, grpc_port=grpc_port, token="s3cret",
                   extra_env={"OMG_TLS_CERT": str(cert), "OMG_TLS_KEY": str(key),
                              "OMG_GRPC_ADDR": f"0.0.0.0:{grpc_port}", "OMG_HTTP_ADDR": f"0.0.0.0:{http_port}"})
    d.proc = subprocess.Popen([*_omg(), "serve"], env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        remote = {**d.env, "OMG_HOST": f"grpcs://localhost:{grpc_port}", "OMG_TLS_CA": str(cert),
                  "OMG_GRPC_ADDR": "127.0.0.1:1"}  # OMG_HOST wins over the local address
        _wait(lambda: subprocess.run([*_omg(), "status"], env=remote, capture_output=True).returncode == 0)
        r = subprocess.run([*_omg(), "model", "add", str(gguf_path), "--name", "m"], env=remote,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run([*_omg(), "model", "list"], env=remote, capture_output=True, text=True)
        assert r.returncode == 0 and "m " in r.stdout
        # --host does the same as OMG_HOST.
        flag_env = {k: v for k, v in remote.items() if k != "OMG_HOST"}
        r = subprocess.run([*_omg(), "--host", f"grpcs://localhost:{grpc_port}", "status"], env=flag_env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        # Without the token: refused, exit 4, a message that says what to do.
        no_token = {k: v for k, v in remote.items() if k != "OMG_TOKEN"}
        r = subprocess.run([*_omg(), "model", "list"], env=no_token, capture_output=True, text=True, timeout=30)
        assert r.returncode == 4 and "OMG_TOKEN" in r.stderr
        # Plain text to a TLS daemon fails fast with a clear message, never a hang.
        plain = {**remote, "OMG_HOST": f"localhost:{grpc_port}", "OMG_TLS_CA": ""}
        r = subprocess.run([*_omg(), "model", "list"], env=plain, capture_output=True, text=True, timeout=30)
        assert r.returncode == 3 and f"localhost:{grpc_port}" in r.stderr
        # HTTPS with the token.
        url = f"https://localhost:{http_port}/api/tags"
        trust = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(url, verify=trust, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url, verify=trust).status_code == 401
    finally:
        d.proc.terminate()
        d.proc.wait(15)


def test_tls_misconfiguration_is_a_clear_error(tmp_path: Path) -> None:
    d = new_daemon(tmp_path, extra_env={"OMG_TLS_CERT": str(tmp_path / "missing.pem")})
    r = d.omg("serve", timeout=30)
    assert r.returncode != 0 and "OMG_TLS_KEY" in r.stderr


def _omg() -> list[str]:
    import sys

    return [sys.executable, "-m", "ohmygpu.cli.main"]


def _wait(ready, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError("the daemon did not come up")
        time.sleep(0.3)
