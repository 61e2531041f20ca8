"""The official `ollama` client, unchanged, against the daemon serving SmolLM2."""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest

from tests.helpers import DaemonProc

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(daemon: DaemonProc) -> ollama.Client:
    return ollama.Client(host=daemon.http)


def test_version_tags_show(client: ollama.Client) -> None:
    import httpx
    from ohmygpu.core.version import __version__

    assert httpx.get(str(client._client.base_url) + "/api/version").json() == {"version": __version__}
    models = client.list().models
    smol = next(m for m in models if m.model == "smollm2:latest")  # listed with its tag, as Ollama does
    assert smol.size > 90_000_000 and len(smol.digest) == 64
    assert smol.details.format == "gguf" and smol.details.quantization_level == "Q4_1"
    assert smol.details.family == "llama" and smol.details.parameter_size.endswith("M")
    show = client.show("smollm2")
    assert "im_start" in show.template and show.details.family == "llama"
    assert show.modelinfo["llama.context_length"] == 8192
    with pytest.raises(ollama.ResponseError) as e:
        client.show("missing")
    assert e.value.status_code == 404


def test_chat_streamed_and_not(client: ollama.Client) -> None:
    opts = {"temperature": 0, "num_predict": 12, "seed": 1, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
    parts = list(client.chat(model="smollm2", messages=[{"role": "user", "content": "Say hello."}], options=opts,
                             stream=True, keep_alive="5m"))
    assert len(parts) > 3 and parts[-1].done and not parts[0].done
    final = parts[-1]
    assert final.done_reason in ("stop", "length") and final.eval_count > 0 and final.prompt_eval_count > 0
    assert final.eval_duration > 0 and final.total_duration >= final.eval_duration
    text = "".join(p.message.content for p in parts)
    whole = client.chat(model="smollm2", messages=[{"role": "user", "content": "Say hello."}], options=opts)  # same seed
    assert whole.message.content == text and whole.done


def test_generate_with_schema_format(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                               "legs": {"type": "integer"}},
              "required": ["name", "legs"], "additionalProperties": False}
    r = client.generate(model="smollm2", prompt="Describe a dog as JSON.", format=schema,
                        options={"temperature": 0, "num_predict": 100})
    jsonschema.validate(json.loads(r.response), schema)
    r = client.generate(model="smollm2", prompt="Give me a JSON object with the name and age of a cat.",
                        format="json", options={"temperature": 0, "num_predict": 300})
    assert r.done_reason == "stop", r.response
    assert isinstance(json.loads(r.response), dict)
    streamed = list(client.generate(model="smollm2", prompt="Hi", options={"num_predict": 5}, stream=True))
    assert streamed[-1].done and streamed[-1].eval_count == 5


def test_generate_raw_and_empty_prompt_loads(client: ollama.Client) -> None:
    r = client.generate(model="smollm2", prompt="1, 2, 3,", raw=True, options={"temperature": 0, "num_predict": 4})
    assert r.response and r.eval_count == 4
    loaded = client.generate(model="smollm2", prompt="")
    assert loaded.done and loaded.done_reason == "load"


def test_tools(client: ollama.Client) -> None:
    def get_weather(city: str) -> str:
        """Get the current weather for a city.

        Args:
          city: The name of the city
        """
        return "sunny"

    r = client.chat(model="smollm2", messages=[{"role": "user", "content": "What's the weather in Paris?"}],
                    tools=[get_weather], options={"temperature": 0, "num_predict": 60})
    # Ollama's own API has no tool_choice: the model decides. Either answer is well formed.
    if r.message.tool_calls:
        assert r.message.tool_calls[0].function.name == "get_weather"
        assert isinstance(r.message.tool_calls[0].function.arguments, dict)
    else:
        assert r.message.content


def test_create_copy_delete(client: ollama.Client) -> None:
    # create, copy and delete as the client sends them (tests/e2e/test_ollama_api.py covers what
    # a created model does).
    assert client.create(model="smol-terse", from_="smollm2", system="Answer in one word.",
                         parameters={"num_predict": 4}).status == "success"
    assert client.copy("smol-terse", "smol-terse-2").status == "success"
    names = {m.model for m in client.list().models}
    assert {"smol-terse:latest", "smol-terse-2:latest"} <= names
    assert client.show("smol-terse-2").details.parent_model == "smollm2"
    for name in ("smol-terse-2", "smol-terse"):
        assert client.delete(name).status == "success"
    assert not {"smol-terse:latest", "smol-terse-2:latest"} & {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as e:
        client.delete("smol-terse")
    assert e.value.status_code == 404


def test_ps(client: ollama.Client) -> None:
    client.generate(model="smollm2", prompt="")
    ps = client.ps().models
    assert ps[0].model == "smollm2:latest" and ps[0].size > 50_000_000 and ps[0].size_vram == 0


def test_errors_in_ollama_format(client: ollama.Client, daemon: DaemonProc) -> None:
    import httpx

    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="missing", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404 and "missing" in e.value.error
    r = httpx.post(daemon.http + "/api/chat", content=b"{bad json")
    assert r.status_code == 400 and "error" in r.json() and isinstance(r.json()["error"], str)
    r = httpx.post(daemon.http + "/api/generate", json={"model": "smollm2", "prompt": "x", "keep_alive": "forever"})
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]
    r = httpx.post(daemon.http + "/api/generate", json={"model": "smollm2", "prompt": 5})
    assert r.status_code == 400 and "prompt" in r.json()["error"]


def test_load_duration_is_the_cold_start(tmp_path, gguf_path) -> None:
    # The first request after a cold start loaded the model: its load_duration says how long
    # that took; a request to the loaded model took no load.
    import httpx

    from tests.helpers import new_daemon

    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        body = {"model": "smollm2", "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
        cold = httpx.post(d.http + "/api/generate", json=body, timeout=120).json()
        assert cold["load_duration"] > 0 and cold["total_duration"] >= cold["load_duration"], cold
        warm = httpx.post(d.http + "/api/generate", json=body, timeout=120).json()
        assert warm["load_duration"] == 0, warm
        streamed = httpx.post(d.http + "/api/generate", json={**body, "stream": True}, timeout=120)
        assert json.loads(streamed.text.splitlines()[-1])["load_duration"] == 0
    finally:
        d.stop()
