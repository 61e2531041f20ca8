"""The calls Open WebUI makes to an Ollama, an OpenAI and an Automatic1111 server, replayed
against the daemon, with the fields it reads from each answer (read from Open WebUI's
backend/open_webui/routers/ollama.py, openai.py and images.py; docs/open-webui.md).

Open WebUI adds ":latest" to a model name without a tag before it looks the name up and sends
it (chat, generate, embed); sends `X-OpenWebUI-User-*` headers when it forwards user info; pulls
with `insecure: true`; unloads with an empty generate and keep_alive 0; deletes with the name in
a DELETE body; parses /api/ps expiries with datetime.fromisoformat and the version as numbers.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, gguf_with_uint32, new_daemon

pytestmark = pytest.mark.slow
KEY = "owui-key"
# What Open WebUI sends with every request: its bearer key, JSON, and (ENABLE_FORWARD_USER_INFO_HEADERS) who asks.
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
           "X-OpenWebUI-User-Name": "Ada Lovelace", "X-OpenWebUI-User-Id": "u-1",
           "X-OpenWebUI-User-Email": "ada@example.com", "X-OpenWebUI-User-Role": "admin"}
REPO = "test-org/owui-GGUF"


@pytest.fixture(scope="module")
def hub(gguf_path: Path) -> Iterator[FakeHub]:
    with FakeHub([FakeRepo(REPO, {"owui.Q4_1.gguf": gguf_with_uint32(gguf_path, "omg.test.owui", 1)})]) as h:
        yield h


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, hub: FakeHub) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("owui")
    daemon = new_daemon(tmp, token=KEY, extra_env={
        "OMG_NUM_THREADS": "1", "HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp / "hf"),
        "HF_HUB_DISABLE_XET": "1"}).start()
    try:
        assert daemon.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        yield daemon
    finally:
        daemon.stop()


def _get(d: DaemonProc, path: str) -> httpx.Response:
    r = httpx.get(d.http + path, headers=HEADERS, timeout=60)
    assert r.status_code == 200, (path, r.text)
    return r


def _models_by_id(d: DaemonProc) -> dict[str, dict]:
    # get_all_models: keyed by each /api/tags entry's "model".
    return {m["model"]: m for m in _get(d, "/api/tags").json()["models"]}


def _owui_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def test_connection_check_and_model_lists(d: DaemonProc) -> None:
    # verify_connection / get_ollama_versions: "version", compared as numbers.
    version = _get(d, "/api/version").json()["version"]
    assert tuple(map(int, re.sub(r"^v|-.*", "", version).split(".")))
    models = _models_by_id(d)
    # Listed with its tag, as Ollama lists it: the name Open WebUI sends a chat with (it adds
    # ":latest" to an untagged name) is the name it finds in this list.
    smol = models[_owui_name("smollm2")]
    assert smol["name"] == "smollm2:latest" and smol["size"] > 0 and smol["details"]["quantization_level"] == "Q4_1"
    # OpenAI connection: GET {base}/models, data[].id (name falls back to the id).
    ids = [m["id"] for m in _get(d, "/v1/models").json()["data"]]
    assert "smollm2" in ids
    # Without the key: refused, as Open WebUI shows a connection error.
    assert httpx.get(d.http + "/api/tags").status_code == 401


def test_chat_show_ps_unload_as_open_webui_sends_them(d: DaemonProc) -> None:
    name = _owui_name("smollm2")  # generate_chat_completion adds the tag before sending
    body = {"model": name, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "stream": True, "options": {"num_predict": 4, "temperature": 0.2}, "keep_alive": "5m"}
    pieces, done = [], None
    with httpx.stream("POST", d.http + "/api/chat", headers=HEADERS, json=body, timeout=120) as r:
        assert r.status_code == 200 and "ndjson" in r.headers["content-type"]
        for line in r.iter_lines():
            chunk = json.loads(line)
            if chunk["done"]:
                done = chunk
            else:
                pieces.append(chunk["message"]["content"])
    assert pieces and done["eval_count"] == 4 and done["done_reason"] == "length"
    # Non-streamed too (tasks: titles, tags), read as message.content.
    r = httpx.post(d.http + "/api/chat", headers=HEADERS, json={**body, "stream": False}, timeout=120)
    assert r.status_code == 200 and isinstance(r.json()["message"]["content"], str)
    # /api/show with {"model": ...}: details and model_info for the model's page.
    shown = httpx.post(d.http + "/api/show", headers=HEADERS, json={"model": name}, timeout=30)
    assert shown.status_code == 200, shown.text
    assert shown.json()["details"]["family"] == "llama" and "completion" in shown.json()["capabilities"]
    # /api/ps: name and expires_at, parsed with fromisoformat for the model list's expiry.
    loaded = {m["name"]: m for m in _get(d, "/api/ps").json()["models"]}
    assert datetime.fromisoformat(loaded["smollm2:latest"]["expires_at"]).timestamp() > 0
    # unload_model: an empty generate with keep_alive 0, not streamed, answered as JSON.
    r = httpx.post(d.http + "/api/generate", headers=HEADERS, json={"model": name, "keep_alive": 0, "prompt": ""},
                   timeout=60)
    assert r.status_code == 200 and r.json()["done"] is True, r.text
    assert "smollm2:latest" not in {m["name"] for m in _get(d, "/api/ps").json()["models"]}


def test_openai_chat_stream_as_open_webui_sends_it(d: DaemonProc) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "stream": True,
            "max_tokens": 3, "stream_options": {"include_usage": True}}
    text, usage = "", None
    with httpx.stream("POST", d.http + "/v1/chat/completions", headers=HEADERS, json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
    assert text and usage["completion_tokens"] == 3


def test_pull_and_delete_as_open_webui_sends_them(d: DaemonProc) -> None:
    source = f"hf.co/{REPO}:Q4_1"
    statuses, digests = [], []
    with httpx.stream("POST", d.http + "/api/pull", headers=HEADERS, json={"model": source, "insecure": True},
                      timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            data = json.loads(line)
            assert "error" not in data, data
            statuses.append(data["status"])
            if "digest" in data:  # the Ollama pull UI reads digest, total and completed
                digests.append(data["digest"])
                assert data["completed"] <= data["total"]
    assert statuses[-1] == "success" and digests and all(x.startswith("sha256:") for x in digests)
    assert source in _models_by_id(d)
    # delete_model: DELETE /api/delete with {"model": ..., "name": ...} in the body.
    r = httpx.request("DELETE", d.http + "/api/delete", headers=HEADERS, json={"model": source, "name": source}, timeout=30)
    assert r.status_code == 200, r.text
    assert source not in _models_by_id(d)
    missing = httpx.request("DELETE", d.http + "/api/delete", headers=HEADERS, json={"model": source}, timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()  # Open WebUI shows res["error"]


def test_image_generation_through_openai_and_automatic1111(d: DaemonProc, sd_model_path: Path) -> None:
    pytest.importorskip("stable_diffusion_cpp")
    added = httpx.post(d.http + "/v1/store/models", headers=HEADERS, json={"path": str(sd_model_path), "name": "tiny-sd"},
                       timeout=60)
    assert added.status_code == 200, added.text
    # Engine "openai": POST {base}/images/generations, data[].b64_json.
    body = {"model": "tiny-sd", "prompt": "a red boat", "n": 1, "size": "64x64", "response_format": "b64_json",
            "steps": 1}
    r = httpx.post(d.http + "/v1/images/generations", headers=HEADERS, json=body, timeout=300)
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["data"][0]["b64_json"]).startswith(b"\x89PNG")
    # Engine "automatic1111": sd-models (title, model_name), options (sd_model_checkpoint), txt2img images[].
    a1111 = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    checkpoints = httpx.get(d.http + "/sdapi/v1/sd-models", headers=a1111, timeout=30).json()
    title = next(m["title"] for m in checkpoints if m["model_name"] == "tiny-sd")
    assert httpx.post(d.http + "/sdapi/v1/options", headers=a1111, json={"sd_model_checkpoint": title},
                      timeout=30).status_code == 200
    assert httpx.get(d.http + "/sdapi/v1/options", headers=a1111, timeout=30).json()["sd_model_checkpoint"] == title
    r = httpx.post(d.http + "/sdapi/v1/txt2img", headers=a1111, timeout=300,
                   json={"prompt": "a red boat", "batch_size": 1, "width": 64, "height": 64, "steps": 1})
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["images"][0]).startswith(b"\x89PNG")
