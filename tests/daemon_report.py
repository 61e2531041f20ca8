"""When a test fails and a daemon it used has exited, its report carries the daemon's exit status
and the tail of its serve.log: a daemon that died between two tests otherwise shows only as a
refused connection, and CI keeps no temporary files to read afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import DaemonProc

_TAIL_CHARS = 6000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if not isinstance(value, DaemonProc) or value.proc is None:
            continue
        rc = value.proc.poll()
        if rc is None:
            continue
        log = value.home / "serve.log"
        tail = log.read_text(errors="replace")[-_TAIL_CHARS:] if log.exists() else "(no serve.log)"
        report.sections.append((f"daemon {name!r} exited with {rc}", tail))
