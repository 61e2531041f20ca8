"""Server reflection and the standard health service, on the daemon's gRPC port and on a
worker's Unix socket: what grpcurl, grpc_health_probe and load balancers speak."""

from __future__ import annotations

from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.helpers import new_daemon, worker_pid

pytestmark = pytest.mark.slow
SERVING = health_pb2.HealthCheckResponse.SERVING


def _services(channel: grpc.Channel) -> set[str]:
    return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def _check(channel: grpc.Channel, service: str = "", metadata: tuple = ()) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5, metadata=metadata).status


def test_daemon_reflection_and_health(daemon) -> None:
    with grpc.insecure_channel(daemon.grpc_addr) as channel:
        names = _services(channel)
        assert {"ohmygpu.api.v1.ModelService", "ohmygpu.api.v1.ChatService", "ohmygpu.api.v1.EventService",
                "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names, names
        # A client can build the whole contract from reflection: a service's file and its imports
        # (google/api/annotations.proto, the runtime's messages) resolve.
        db = ProtoReflectionDescriptorDatabase(channel)
        from google.protobuf import descriptor_pool

        pool = descriptor_pool.DescriptorPool(db)
        chat = pool.FindServiceByName("ohmygpu.api.v1.ChatService")
        assert chat.FindMethodByName("Chat").output_type.full_name == "ohmygpu.runtime.v1.ChatResponse"
        assert _check(channel) == SERVING
        assert _check(channel, "ohmygpu.api.v1.ModelService") == SERVING
        with pytest.raises(grpc.RpcError) as e:
            _check(channel, "no.such.Service")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_worker_reflection_and_health(daemon) -> None:
    r = httpx.post(f"{daemon.http}/v1/chat/completions", timeout=120, json={
        "model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    pid = worker_pid(daemon, "smollm2")
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    socket_path = args[args.index(b"--socket") + 1].decode()
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        assert {"ohmygpu.runtime.v1.Runtime", "grpc.health.v1.Health"} <= _services(channel)
        assert _check(channel) == SERVING
        assert _check(channel, "ohmygpu.runtime.v1.Runtime") == SERVING


def test_health_needs_no_token_reflection_does(tmp_path: Path) -> None:
    d = new_daemon(tmp_path, token="t0ken").start()
    try:
        with grpc.insecure_channel(d.grpc_addr) as channel:
            # Like /livez and /readyz: a probe carries no token.
            assert _check(channel) == SERVING
            with pytest.raises(grpc.RpcError) as e:
                _services(channel)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # Everything else still needs the token, health's streaming Watch included.
            stub = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.RpcError) as e:
                next(iter(stub.Watch(health_pb2.HealthCheckRequest(), timeout=5)))
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        d.stop()
