"""/openapi.json: a valid OpenAPI 3.0 document holding every route the gateway serves, and every
management route answering as it says (requests and answers validated against its schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from tests.e2e.hub_daemon import PULL_REPO, hub_daemon
from tests.helpers import DaemonProc

pytestmark = pytest.mark.slow
CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say hi"}], "params": {"maxTokens": 3}}

# operationId -> (path parameters, query, body): one call per management operation. Routes that
# would end the fixture (Shutdown) or need files it lacks are called so that they fail cleanly,
# which checks their error answer against the document instead.
SAMPLES: dict[str, tuple[dict[str, str], dict[str, Any], Any]] = {
    "ModelService_ListModels": ({}, {"pageSize": 10}, None),
    "ModelService_GetModel": ({"name": "smollm2"}, {}, None),
    "ModelService_EstimateModel": ({}, {"name": "smollm2"}, None),
    "ModelService_AddModel": ({}, {}, {"path": "/nonexistent/m.gguf", "name": "nope"}),
    "ModelService_InstallModel": ({}, {}, {"source": PULL_REPO, "name": "pulled"}),
    "ModelService_VerifyModels": ({}, {}, {"name": "smollm2"}),
    "ModelService_GarbageCollect": ({}, {}, {"dryRun": True}),
    "ModelService_DiskUsage": ({}, {}, None),
    "ModelService_SearchModels": ({}, {"query": "smol", "limit": 5}, None),
    "ModelService_DeleteModel": ({"name": "no-such-model"}, {}, None),
    "ModelService_CreateModel": ({}, {}, {"name": "smol-pirate", "derived": {
        "base": "smollm2", "system": "You are a pirate."}}),
    "ModelService_AliasModel": ({}, {}, {"source": "smollm2", "destination": "smol-alias"}),
    "ChatService_Chat": ({}, {}, CHAT),
    "ChatService_Complete": ({}, {}, {"model": "smollm2", "prompt": "Once upon", "params": {"maxTokens": 3}}),
    "ChatService_CountTokens": ({}, {}, CHAT),
    "SystemService_GetVersion": ({}, {}, None),
    "SystemService_GetStatus": ({}, {}, None),
    "SystemService_ListLoaded": ({}, {}, None),
    "SystemService_ListDevices": ({}, {}, None),
    "SystemService_UnloadModel": ({"name": "no-such-model"}, {}, {}),
    "SystemService_ListNodes": ({}, {}, None),
    "SystemService_GetHealth": ({}, {}, None),
    "SystemService_Shutdown": ({}, {}, {"unknownField": 1}),  # off the document: refused, nothing stops
    "JobService_GetJob": ({"id": "JOB"}, {}, None),
    "JobService_ListJobs": ({}, {}, None),
    "JobService_CancelJob": ({"id": "no-such-job"}, {}, {}),
    "JobService_WatchJob": ({"id": "JOB"}, {}, None),
    "EventService_StreamEvents": ({}, {"afterId": "0", "kinds": ["EVENT_KIND_DOWNLOAD", "EVENT_KIND_LOAD"]}, None),
    "RunService_CreateRun": ({}, {}, {"model": {"repo": "no-such-model"}}),
    "RunService_ListRuns": ({}, {}, None),
    "RunService_GetRun": ({"id": "no-such-run"}, {}, None),
    "RunService_StopRun": ({"id": "no-such-run"}, {}, {}),
    "RunService_StreamRunLogs": ({"id": "no-such-run"}, {}, None),
    "EmbeddingService_Embed": ({}, {}, {"model": "smollm2", "inputs": ["hello"]}),
    "EmbeddingService_Rerank": ({}, {}, {"model": "smollm2", "query": "q", "documents": ["a", "b"]}),
    "AudioService_Transcribe": ({}, {}, {"model": "smollm2", "audio": "AAAA"}),
    "AudioService_Speak": ({}, {}, {"model": "smollm2", "input": "hello"}),
    # A GGUF model named as the one to train: a 400 (train its HF copy, with gguf_base).
    "TrainService_CreateTrainJob": ({}, {}, {"model": "smollm2", "data": '{"prompt": "a", "completion": "b"}\n',
                                             "output": "tuned"}),
    "AudioService_ListVoices": ({}, {}, None),
    "ImageService_GenerateImage": ({}, {}, {"model": "smollm2", "prompt": "a cat"}),
}

# Requests the document does not allow, sent to see them refused with its error schema.
OFF_DOCUMENT = {"SystemService_Shutdown"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    with hub_daemon(tmp_path_factory.mktemp("openapi"), gguf_path) as (d, _):
        yield d


@pytest.fixture(scope="module")
def doc(served: DaemonProc) -> dict[str, Any]:
    r = httpx.get(f"{served.http}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()


def _check(doc: dict[str, Any], schema: dict[str, Any], instance: Any, what: str) -> None:
    errors = sorted(OAS30Validator({**schema, "components": doc["components"]}).iter_errors(instance),
                    key=lambda e: list(e.path))
    assert not errors, f"{what}: {errors[0].message} at {list(errors[0].path)} in {json.dumps(instance)[:600]}"


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    validate_spec(doc)
    assert doc["openapi"] == "3.0.3"
    # The proto3 JSON mapping: camelCase names, enums by name, 64-bit integers as strings.
    schemas = doc["components"]["schemas"]
    record = schemas["ohmygpu.assets.v1.InstallRecord"]["properties"]
    assert "createdAt" in record and record["createdAt"] == {"type": "string", "format": "date-time"}
    assert schemas["ohmygpu.api.v1.JobState"]["enum"][0] == "JOB_STATE_UNSPECIFIED"
    assert schemas["ohmygpu.api.v1.Job"]["properties"]["totalBytes"]["type"] == "string"


def test_every_served_route_is_documented(doc: dict[str, Any]) -> None:
    from ohmygpu.gateway.management import management_routes
    from ohmygpu.gateway.ollama import OllamaRoutes
    from ohmygpu.gateway.openai import OpenAIRoutes
    from ohmygpu.gateway.openapi_dialects import OPERATIONS, openapi_path

    management = {(verb, openapi_path(r.path)) for r in management_routes(None)  # type: ignore[arg-type]
                  for verb in r.methods if verb != "HEAD"}
    documented = {(verb.upper(), path) for path, ops in doc["paths"].items() for verb in ops}
    assert management <= documented, management - documented
    # ... and nothing else claims the grpc methods: the document's management paths are exactly these.
    grpc_ops = {(verb.upper(), path) for path, ops in doc["paths"].items() for verb, op in ops.items()
                if "x-grpc-method" in op}
    assert grpc_ops == management
    assert {op["operationId"] for ops in doc["paths"].values() for op in ops.values()
            if "operationId" in op} == set(SAMPLES)
    # The OpenAI and Ollama routes, each with its own summary.
    for route in OpenAIRoutes(None).routes() + OllamaRoutes(None).routes():  # type: ignore[arg-type]
        for verb in route.methods - {"HEAD"}:
            key = (verb, openapi_path(route.path))
            assert key in documented, key
            assert key in OPERATIONS, f"no summary for {key} in gateway/openapi_dialects.py"
            assert doc["paths"][key[1]][verb.lower()]["summary"] == OPERATIONS[key][0]
    assert doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["required"] == ["model", "messages"]


def _job_id(base: str) -> str:
    """A pull's job id, once it has ended (so the history holds download events to stream)."""
    r = httpx.post(f"{base}/v1/models/install", json={"source": PULL_REPO, "name": "for-jobs"})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    with httpx.stream("GET", f"{base}/v1/jobs/{job}:watch", timeout=60) as w:
        for _ in w.iter_lines():
            pass
    return job


def test_management_routes_answer_as_documented(served: DaemonProc, doc: dict[str, Any]) -> None:
    base = served.http
    job = _job_id(base)
    checked, statuses = set(), {}
    for template, ops in doc["paths"].items():
        for verb, op in ops.items():
            if "x-grpc-method" not in op:
                continue
            op_id = op["operationId"]
            path_params, query, body = SAMPLES[op_id]
            path = template
            for name, value in path_params.items():
                path = path.replace("{%s}" % name, job if value == "JOB" else value)
            for p in op.get("parameters", []):
                if p["in"] == "query" and p["name"] in query:
                    _check(doc, p["schema"], query[p["name"]], f"{op_id} query {p['name']}")
            assert set(query) <= {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}, op_id
            if op_id in OFF_DOCUMENT:
                with pytest.raises(AssertionError):
                    _check(doc, op["requestBody"]["content"]["application/json"]["schema"], body, op_id)
            elif body is not None:
                _check(doc, op["requestBody"]["content"]["application/json"]["schema"], body, f"{op_id} request")
            else:
                assert "requestBody" not in op, op_id
            status, answers = _call(base, verb, path, query, body, streaming=op.get("x-stream", False))
            response = op["responses"].get(str(status), op["responses"]["default"])
            assert op_id not in OFF_DOCUMENT or status == 400, (op_id, status)
            assert status < 500 or status in (501, 503), f"{op_id}: {status} {answers}"
            if str(status) == "200" and op.get("x-stream"):
                schema = response["content"]["application/x-ndjson"]["schema"]
            else:
                schema = response["content"]["application/json"]["schema"]
            for answer in answers:
                _check(doc, schema, answer, f"{op_id} answer ({status})")
            checked.add(op_id)
            statuses[op_id] = status
    assert checked == set(SAMPLES)
    # Not only errors were checked: the reads, the pull, chat, completion and embeddings answered.
    errors = {"JobService_CancelJob", "ModelService_AddModel", "ModelService_DeleteModel", "SystemService_Shutdown",
              "ImageService_GenerateImage", "AudioService_Transcribe", "EmbeddingService_Rerank", "AudioService_Speak",
              "TrainService_CreateTrainJob"} | {k for k in SAMPLES if k.startswith("RunService_") and "ListRuns" not in k}
    assert {k for k, v in statuses.items() if v == 200} == set(SAMPLES) - errors, statuses


def _call(base: str, verb: str, path: str, query: dict[str, Any], body: Any,
          *, streaming: bool) -> tuple[int, list[Any]]:
    """Status and JSON answers (each line of a stream; the stream of events is read for 2 s)."""
    kw: dict[str, Any] = {"params": query}
    if body is not None:
        kw["json"] = body
    with httpx.Client(base_url=base, timeout=httpx.Timeout(120, read=2 if "events" in path else 120)) as c:
        with c.stream(verb.upper(), path, **kw) as r:
            if not streaming or r.status_code != 200:
                return r.status_code, [json.loads(r.read())]
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = []
            try:
                for line in r.iter_lines():
                    if line:
                        lines.append(json.loads(line))
            except httpx.ReadTimeout:
                assert "events" in path, path
            return r.status_code, lines
