"""The web console's files: shipped in the wheel, self-contained (nothing fetched from elsewhere),
every module they import present; `omg ui`'s URL."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from ohmygpu.cli.ui import console_url
from ohmygpu.gateway import console

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = Path(console.__file__).parent


def _assets() -> dict[str, str]:
    return {p.name: p.read_text() for p in CONSOLE.iterdir() if p.suffix in (".html", ".js", ".css", ".svg")}


def test_every_import_and_reference_is_a_shipped_file() -> None:
    assets = _assets()
    assert "index.html" in assets and "app.js" in assets
    for name, text in assets.items():
        for ref in re.findall(r"""from\s+["']\./([\w.-]+)["']""", text) + re.findall(r"""(?:src|href)="([\w.-]+)\"""", text):
            assert ref in assets, f"{name} refers to {ref}, which is not shipped"
        # Offline: no URL of another origin; no inline script or style (the policy forbids them).
        # (an SVG's xmlns names its namespace; nothing is fetched from it)
        assert not re.search(r"https?://", text.replace('xmlns="http://www.w3.org/2000/svg"', "")), name
        assert "innerHTML" not in text and "eval(" not in text, name
    assert not re.search(r"<script(?![^>]*\bsrc=)", assets["index.html"])
    assert "style=" not in assets["index.html"]
    assert set(console.asset_files()) == {f"/ui/{n}" for n in assets} | {"/ui/"}


def test_the_wheel_ships_the_console(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("ohmygpu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in _assets():
        assert f"ohmygpu/gateway/console/{name}" in names, name


def test_console_url() -> None:
    assert console_url("127.0.0.1:11434") == "http://127.0.0.1:11434/ui/"
    assert console_url("0.0.0.0:8080") == "http://127.0.0.1:8080/ui/"
    assert console_url("[::]:11434") == "http://127.0.0.1:11434/ui/"
    assert console_url("[::1]:11434") == "http://[::1]:11434/ui/"
    assert console_url("box.lan:11434") == "http://box.lan:11434/ui/"
