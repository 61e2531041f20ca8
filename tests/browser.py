"""A real browser for the console's tests: Debian's Chromium, headless, driven by Playwright.

Playwright's own browser download cannot be reached here, so it drives the system Chromium
(`apt-get install chromium`; OMG_TEST_CHROMIUM names another). Every request a page makes is
recorded (the console must load nothing from outside the daemon), so are its console errors (a
Content-Security-Policy violation is one). `on_failure_screenshot` saves a screenshot of a failed
test's page under its pytest tmp path and names the file in the failure.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def chromium_path() -> str:
    path = os.environ.get("OMG_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium: apt-get install chromium (scripts/setup.sh)")
    return path


@dataclass
class Recorder:
    """What one page asked for and complained about."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))

    def outside(self, origin: str) -> list[str]:
        """Requests to anything but `origin` (data: and blob: URLs are the page's own)."""
        return [u for u in self.requests if not (u.startswith(origin + "/") or u == origin
                                                 or u.startswith(("data:", "blob:")))]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, chromium_sandbox=False,
                              args=["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    pg.recorder = Recorder()
    pg.recorder.attach(pg)
    pg.shots_dir = tmp_path / "screenshots"
    try:
        yield pg
    finally:
        context.close()


def on_failure_screenshot(test: Callable[..., None]) -> Callable[..., None]:
    """Decorate a test taking the `page` fixture: on failure, its page is saved as a PNG under
    the test's tmp path and the failure names that file, with the page's errors."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        pg = kwargs["page"]
        try:
            test(*args, **kwargs)
        except Exception as e:
            pg.shots_dir.mkdir(parents=True, exist_ok=True)
            shot = pg.shots_dir / f"{test.__name__}.png"
            try:
                pg.screenshot(path=str(shot), full_page=True)
                where = f"screenshot: {shot}"
            except Exception as shot_error:  # the page itself may be gone
                where = f"no screenshot ({shot_error})"
            rec = pg.recorder
            raise AssertionError(f"{type(e).__name__}: {e}\n{where}\nurl: {pg.url}\n"
                                 f"page errors: {rec.page_errors[-5:]}\nconsole errors: {rec.console_errors[-5:]}") from e

    return run
