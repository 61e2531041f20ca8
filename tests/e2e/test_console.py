"""The web console (/ui/) in a real browser (headless Chromium) against a real daemon serving
SmolLM2 and whisper, with pulls from the fake hub: what a user sees and does, end to end."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import browser, chromium_path, on_failure_screenshot, page  # noqa: F401 (fixtures)
from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, gguf_with_uint32, new_daemon, speak, whisper_dir

pytestmark = pytest.mark.slow
REPO = "test-org/smol-GGUF"
PULLED = f"hf.co/{REPO}:Q4_1"


@pytest.fixture(scope="module")
def hub(gguf_path: Path) -> Iterator[FakeHub]:
    # Other bytes than the store's smollm2 (one more metadata key), so the pull downloads them
    # instead of reusing the blob already there.
    model = gguf_with_uint32(gguf_path, "omg.test.console", 1)
    with FakeHub([FakeRepo(REPO, {"smol.Q4_1.gguf": model, "README.md": b"# smol\n"})]) as h:
        h.faults.bytes_per_second = 30_000_000  # ~3 s for the model: progress is seen moving
        yield h


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, hub: FakeHub) -> Iterator[DaemonProc]:
    chromium_path()  # skip before starting anything when there is no browser
    tmp = tmp_path_factory.mktemp("console")
    daemon = new_daemon(tmp, extra_env={"OMG_NUM_THREADS": "1", "HF_ENDPOINT": hub.endpoint,
                                        "HF_HUB_CACHE": str(tmp / "hf"), "HF_HUB_DISABLE_XET": "1"}).start()
    try:
        for path, name in ((gguf_path, "smollm2"), (whisper_dir(), "whisper")):
            added = daemon.omg("model", "add", str(path), "--name", name)
            assert added.returncode == 0, added.stderr
        yield daemon
    finally:
        daemon.stop()


def _loaded(d: DaemonProc) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(d.http + "/v1/loaded").json().get("models", [])}


def test_assets_are_served_with_a_strict_policy_and_the_api_rules(d: DaemonProc) -> None:
    r = httpx.get(d.http + "/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(d.http + "/ui").status_code == 308
    js = httpx.get(d.http + "/ui/app.js")
    assert js.headers["content-type"].startswith("text/javascript") and "import" in js.text
    # Only the shipped files: nothing else under /ui/ reaches the file system.
    for path in ("/ui/../gateway/app.py", "/ui/__init__.py", "/ui/%2e%2e/app.py", "/ui/nothing.js"):
        assert httpx.get(d.http + path).status_code == 404, path
    # The Host rule of the API holds for the console too (DNS rebinding).
    assert httpx.get(d.http + "/ui/", headers={"Host": "evil.example"}).status_code == 403
    assert "access-control-allow-origin" not in httpx.get(d.http + "/ui/", headers={"Origin": "http://evil.example"}).headers


@on_failure_screenshot
def test_dashboard_lists_the_loaded_model_after_a_chat(d: DaemonProc, page) -> None:
    page.goto(d.http + "/ui/")
    page.wait_for_selector("#nodes [data-node='local'] .membar")
    assert page.locator("#no-loaded").is_visible()
    chat = httpx.post(d.http + "/v1/chat/completions", timeout=120, json={
        "model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    row = page.locator("#loaded tr[data-model='smollm2']")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "chat" and cells[2] == "local" and cells[3] == "cpu", cells
    assert re.fullmatch(r"\d+(\.\d)? [KMG]B", cells[4]), cells
    assert re.fullmatch(r"\d+m\d\ds|\d+s", cells[8]), cells  # the keep-alive countdown
    # Memory bar split by model; the live feed showed the load.
    assert page.locator("#nodes .legend", has_text="smollm2").count() == 1
    page.locator("#event-feed li[data-kind='EVENT_KIND_LOAD']").first.wait_for()
    # Nothing came from anywhere but the daemon, and no policy violation or script error.
    assert page.recorder.outside(d.http) == [], page.recorder.requests
    assert any(u.endswith("/ui/style.css") for u in page.recorder.requests)
    assert page.recorder.page_errors == [] and page.recorder.console_errors == []


@on_failure_screenshot
def test_chat_streams_into_the_page_and_stop_ends_it(d: DaemonProc, page) -> None:
    page.goto(d.http + "/ui/#playground/chat")
    page.fill("#chat-system", "You are a storyteller.")
    page.fill("#chat-max-tokens", "400")
    page.fill("#chat-temperature", "0.9")
    page.fill("#chat-input", "Tell me a very long story about a dragon.")
    page.click("#chat-send")
    # Tokens arrive one after another into the assistant's message.
    page.wait_for_function("() => Number(document.querySelector('#chat-completion-tokens')?.dataset.n) >= 3",
                           timeout=60_000)
    first = page.inner_text("#chat-log .msg.assistant")
    page.wait_for_function("n => document.querySelector('#chat-log .msg.assistant').textContent.length > n",
                           arg=len(first))
    assert page.locator("#chat-stop").is_enabled()
    page.click("#chat-stop")
    page.wait_for_selector("#chat-state:text('stopped')")
    assert page.locator("#chat-send").is_enabled() and page.locator("#chat-stop").is_disabled()
    n = int(page.locator("#chat-completion-tokens").get_attribute("data-n"))
    assert 3 <= n < 400
    assert re.search(r"\d+\.\d tokens/s", page.inner_text("#chat-rate"))
    # The daemon saw the disconnect: the generation is over (not running to 400 tokens).
    deadline = time.monotonic() + 5
    while _loaded(d)["smollm2"].get("inFlight", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _loaded(d)["smollm2"].get("inFlight", 0)
    assert page.recorder.outside(d.http) == []


@on_failure_screenshot
def test_search_pull_with_progress_then_delete_asks_and_removes(d: DaemonProc, hub: FakeHub, page) -> None:
    page.goto(d.http + "/ui/#models")
    page.wait_for_selector("#store-table tr[data-model='smollm2']")
    assert page.locator("#store-table tr[data-model='smollm2'] td").nth(4).inner_text() == "Q4_1"
    # Search the (fake) hub, then pull the quantization it lists.
    page.fill("#search-query", "smol")
    page.click("#search-form button[type=submit]")
    hit = page.locator(f"#hits tr[data-repo='{REPO}']")
    hit.wait_for()
    hit.locator("button.pull-hit", has_text="Q4_1").click()
    job = page.locator(f"#pulls .job[data-model='{PULLED}']")
    job.wait_for()
    # Live per-file progress: the model file's bar moves before the pull ends.
    bar = job.locator("li[data-file='smol.Q4_1.gguf'] progress")
    bar.wait_for()
    seen: set[float] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = job.get_attribute("data-state") if job.count() else None
        if bar.count():
            value, top = float(bar.get_attribute("value") or 0), float(bar.get_attribute("max") or 1)
            if 0 < value < top:
                seen.add(value)
        if state == "JOB_STATE_DONE":
            break
        time.sleep(0.1)
    assert state == "JOB_STATE_DONE", state
    assert seen, "no partial progress was shown"
    row = page.locator(f"#store-table tr[data-model='{PULLED}']")
    row.wait_for()
    # Delete asks first; cancelling keeps the model.
    row.locator("button.delete").click()
    dialog = page.locator("#confirm-dialog")
    assert dialog.is_visible() and PULLED in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    assert not dialog.is_visible() and row.count() == 1
    row.locator("button.delete").click()
    page.click("#confirm-ok")
    row.wait_for(state="detached")
    names = [m["name"] for m in httpx.get(d.http + "/v1/store/models").json()["models"]]
    assert PULLED not in names and "smollm2" in names
    assert page.recorder.outside(d.http) == []


@on_failure_screenshot
def test_transcription_of_an_uploaded_wav_shows_the_words(d: DaemonProc, page, tmp_path: Path) -> None:
    wav = speak(tmp_path / "fox.wav", "The quick brown fox jumps over the lazy dog.")
    page.goto(d.http + "/ui/#playground/transcribe")
    page.set_input_files("#audio-file", str(wav))
    page.click("#transcribe")
    page.wait_for_selector("#transcript-text", timeout=90_000)
    text = page.inner_text("#transcript-text").lower()
    assert "quick brown fox" in text, text
    first = page.locator("#segments li time").first.inner_text()
    assert re.fullmatch(r"00:0\d\.\d\d → 00:0\d\.\d\d", first), first


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    """A daemon with an inference token and an admin token, and one model."""
    daemon = new_daemon(tmp_path_factory.mktemp("guarded"), token="user-token",
                        extra_env={"OMG_ADMIN_TOKEN": "admin-token", "OMG_NUM_THREADS": "1"}).start()
    try:
        added = httpx.post(daemon.http + "/v1/store/models", headers={"Authorization": "Bearer admin-token"},
                           json={"path": str(gguf_path), "name": "smollm2"}, timeout=60)
        assert added.status_code == 200, added.text
        yield daemon
    finally:
        daemon.stop()


@on_failure_screenshot
def test_a_token_protected_daemon_asks_rejects_a_wrong_token_and_limits_the_user(guarded: DaemonProc, page) -> None:
    d = guarded
    page.goto(d.http + "/ui/")
    dialog = page.locator("#token-dialog")
    dialog.wait_for()
    assert dialog.is_visible()
    page.fill("#token-input", "wrong-token")
    page.click("#token-submit")
    page.wait_for_selector("#token-error:text('rejected')")
    assert dialog.is_visible()
    assert page.evaluate("() => sessionStorage.getItem('omg.token')") is None
    # The user token opens inference and listings; management stays disabled.
    page.fill("#token-input", "user-token")
    page.click("#token-submit")
    dialog.wait_for(state="hidden")
    assert "user" in page.inner_text("#role")
    page.goto(d.http + "/ui/#models")
    row = page.locator("#store-table tr[data-model='smollm2']")
    row.wait_for()
    assert row.locator("button.delete").is_disabled() and row.locator("button.pin").is_disabled()
    assert page.locator("#pull-form button[type=submit]").is_disabled()
    # Kept for this tab only: sessionStorage, never localStorage or a cookie.
    assert page.evaluate("() => sessionStorage.getItem('omg.token')") == "user-token"
    assert page.evaluate("() => localStorage.length") == 0 and page.context.cookies() == []
    # The admin token enables them (Access view); a reload keeps the session's token.
    page.goto(d.http + "/ui/#access")
    page.fill("#access-token", "admin-token")
    page.click("#view-access button[type=submit]")
    page.wait_for_selector("#role:text('admin')")
    page.goto(d.http + "/ui/#models")
    page.reload()
    row.wait_for()
    assert row.locator("button.delete").is_enabled()
    # The event stream, read with the token as a header, is live.
    page.goto(d.http + "/ui/#dashboard")
    page.wait_for_selector("#conn[data-feed='live']")
    # A new tab (another session) is asked again.
    other = page.context.browser.new_context().new_page()
    try:
        other.goto(d.http + "/ui/")
        other.locator("#token-dialog").wait_for()
    finally:
        other.context.close()
