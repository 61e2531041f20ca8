"""The HTTP gateway reaches the daemon only through its API module (daemon/api/): no
orchestrator, worker, servicer or store object (issue 11, "one in-process daemon API"), and
nothing of a runtime (what it shares with one, such as core/schema_guard.py, lives in core)."""

from __future__ import annotations

import ast
from pathlib import Path

import ohmygpu.gateway

GATEWAY = Path(ohmygpu.gateway.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            # `from ohmygpu.daemon import orchestrator` names a module too.
            out.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "ohmygpu.daemon")
    return out


def _forbidden(module: str) -> bool:
    if module == "ohmygpu.core.store" or module.startswith("ohmygpu.core.store."):
        return True
    if module == "ohmygpu.runtimes" or module.startswith("ohmygpu.runtimes."):
        return True
    if module == "ohmygpu.daemon.api":
        return False
    return module == "ohmygpu.daemon" or module.startswith("ohmygpu.daemon.")


def test_gateway_imports_only_the_daemon_api() -> None:
    files = sorted(GATEWAY.glob("*.py"))
    assert len(files) > 5  # the walk found the package
    bad = {f"{f.name}: {m}" for f in files for m in _imports(f) if _forbidden(m)}
    assert not bad, f"the gateway imports daemon internals, the store or a runtime: {sorted(bad)}"


def test_the_check_catches_what_it_forbids(tmp_path: Path) -> None:
    # The rule itself, on the shapes of import the gateway used before.
    sample = tmp_path / "x.py"
    sample.write_text("from ohmygpu.daemon.orchestrator import Orchestrator\n"
                      "from ohmygpu.core.store import ModelStore\n"
                      "def f():\n    from ohmygpu.daemon import server\n"
                      "from ohmygpu.daemon.api import DaemonAPI\n"
                      "from ohmygpu.runtimes.llamacpp.schema_guard import check_schema\n"
                      "import ohmygpu.runtimes\n")
    found = {m for m in _imports(sample) if _forbidden(m)}
    assert found == {"ohmygpu.daemon.orchestrator", "ohmygpu.core.store", "ohmygpu.daemon",
                     "ohmygpu.daemon.server", "ohmygpu.runtimes.llamacpp.schema_guard", "ohmygpu.runtimes"}
