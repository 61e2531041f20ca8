"""What a runtime can do comes from its worker's own GetCapabilities (`--capabilities`, in a
child process, once), not from code strings the registry runs; and the daemon API's messages
are its own where the worker's have fields no caller may set."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from typing import Any

import pytest
from ohmygpu.api.v1 import audio_pb2
from ohmygpu.daemon.api.inference import worker_request
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api import registry
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, capabilities_json, parse_args


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    registry.capabilities.cache_clear()
    yield
    registry.capabilities.cache_clear()


class _Fake(BaseRuntime):
    async def GetCapabilities(self, request: Any, context: Any) -> runtime_pb2.GetCapabilitiesResponse:
        return runtime_pb2.GetCapabilitiesResponse(runtime="fake", version="1", gpu=True, tool_calls=True)


def test_capabilities_json_is_the_servicers_answer() -> None:
    answer = json.loads(capabilities_json(_Fake(LogRing())))
    assert answer == {"runtime": "fake", "version": "1", "gpu": True, "toolCalls": True}
    assert parse_args(["--capabilities"]).capabilities  # no --socket needed to ask
    with pytest.raises(SystemExit):
        parse_args([])  # serving still needs one


def test_registry_runs_no_code_strings() -> None:
    assert "gpu_probe" not in {f.name for f in fields(registry.RuntimeEntry)}


@pytest.mark.parametrize("name", list(registry.RUNTIMES))
def test_worker_answers_capabilities_without_a_model(name: str) -> None:
    entry = registry.RUNTIMES[name]
    if not registry.library_available(entry.library):
        pytest.skip(f"{entry.library} is not installed")
    caps = registry.capabilities(name)
    assert caps is not None and caps.runtime == name and caps.version and caps.formats
    assert registry.supports_gpu(name) is caps.gpu


def _fake_run(stdout: str = "", returncode: int = 0, exc: Exception | None = None) -> Any:
    calls: list[list[str]] = []

    def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
        calls.append(cmd)
        assert kw["timeout"] == registry.CAPABILITIES_TIMEOUT_S  # bounded
        if exc is not None:
            raise exc
        return subprocess.CompletedProcess(cmd, returncode, stdout, "boom")

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_registry_asks_the_worker_module_once(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _fake_run('ggml noise\n{"runtime": "llamacpp", "gpu": true, "futureField": 1}\n')
    monkeypatch.setattr(registry.subprocess, "run", run)
    assert registry.supports_gpu("llamacpp") and registry.supports_gpu("llamacpp")
    assert run.calls == [[sys.executable, "-m", "ohmygpu.runtimes.llamacpp.worker", "--capabilities"]]


@pytest.mark.parametrize("outcome", [
    {"returncode": 1},  # a broken CUDA library: the child dies, not the daemon
    {"stdout": "not json"},
    {"stdout": ""},
    {"exc": subprocess.TimeoutExpired("x", 60)},
    {"exc": OSError("no interpreter")},
])
def test_a_worker_that_cannot_answer_has_no_gpu(monkeypatch: pytest.MonkeyPatch, outcome: dict[str, Any]) -> None:
    monkeypatch.setattr(registry.subprocess, "run", _fake_run(**{"stdout": '{"gpu": true}', **outcome}))
    assert registry.supports_gpu("whisper") is False


def test_transcribe_request_of_the_api_has_no_path_and_maps_to_the_workers() -> None:
    api = audio_pb2.TranscribeRequest.DESCRIPTOR.fields_by_name
    worker = runtime_pb2.TranscribeRequest.DESCRIPTOR.fields_by_name
    assert "audio_path" not in api and set(api) == set(worker) - {"audio_path"}
    assert all(api[n].number == worker[n].number and api[n].type == worker[n].type for n in api)
    request = audio_pb2.TranscribeRequest(
        model="m", audio=b"x", language="en", initial_prompt="p", temperature=0.0, translate=True,
        word_timestamps=True, beam_size=3, vad_filter=True, keep_alive="5m")
    out = worker_request(request)
    assert out.HasField("temperature") and not out.audio and not out.audio_path
    request.ClearField("audio")
    assert out.SerializeToString(deterministic=True) == request.SerializeToString(deterministic=True)
    assert not worker_request(audio_pb2.TranscribeRequest(model="m")).HasField("temperature")
