"""The contract does not break v1: `buf breaking` (WIRE_JSON, buf.yaml) against the committed
image of v1, proto/v1.binpb, passes, and it fails when a field is removed.

The snapshot is the contract as v1 stands; adding to it is fine and needs no new snapshot.
Rebuild it only for a deliberate v1 change the lead agreed to:
    npx buf build --exclude-source-info -o proto/v1.binpb
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "proto" / "v1.binpb"


def _buf() -> str:
    local = ROOT / "node_modules/.bin/buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        pytest.fail("buf is not installed: run `npm ci` in the repository root")
    return found


def _breaking(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_buf(), "breaking", "--against", str(SNAPSHOT)], cwd=root,
                          capture_output=True, text=True, timeout=60)


def test_contract_does_not_break_v1() -> None:
    assert SNAPSHOT.is_file()
    r = _breaking(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_breaking_check_fails_on_a_removed_field(tmp_path: Path) -> None:
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    models = tmp_path / "proto/ohmygpu/api/v1/models.proto"
    text = models.read_text()
    # ListModelsRequest.page_token goes (its comment stays: comments are not checked).
    removed = re.sub(r"\n  string page_token = \d+;", "\n", text, count=1)
    assert removed != text
    models.write_text(removed)
    r = _breaking(tmp_path)
    assert r.returncode != 0
    assert "ListModelsRequest" in r.stdout and "page_token" in r.stdout, r.stdout
