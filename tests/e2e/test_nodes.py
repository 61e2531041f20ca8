"""Remote nodes: node agents on separate "hosts" (network namespaces joined by veth pairs where
the machine allows it, else loopback addresses), each with its own OMG_HOME and HF cache, joined
to one daemon over TLS with a join token. Nothing fits the daemon's own budget, so every model
runs on a node; node A is too small for SmolLM2, B and C take it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest
from ohmygpu.api.v1 import events_pb2 as api_events_pb2
from ohmygpu.api.v1 import events_pb2_grpc
from ohmygpu.core.store import ModelStore
from ohmygpu.events.v1 import events_pb2
from ohmygpu.node.v1 import node_pb2, node_pb2_grpc

from tests.fakes.hub import FakeHub, FakeRepo
from tests.helpers import DaemonProc, PtySession, free_port, gguf_with_uint32
from tests.node_hosts import Host, NodeProc, netns_available

pytestmark = pytest.mark.slow
TOKEN = "join-7f3a"
MB = 1_000_000


@dataclass
class Cluster:
    daemon: DaemonProc
    node_port: int
    fingerprint: str
    hosts: list[Host]
    nodes: dict[str, NodeProc]
    tmp: Path
    netns: bool

    def node(self, name: str, index: int, ram_mb: int, **env: str) -> NodeProc:
        host = Host.make(index, self.netns)
        self.hosts.append(host)
        inventory = {"ram_total": ram_mb * MB, "ram_available": ram_mb * MB, "cpu_count": 2,
                     "gpus": [{"index": 0, "name": "Injected GPU", "total": 80_000 * MB, "free": 79_000 * MB}]}
        proc = NodeProc(host, name, self.tmp / f"node-{name}", self.node_port, TOKEN, self.fingerprint,
                        extra_env={"OMG_NODE_INVENTORY": json.dumps(inventory), **env})
        self.nodes[name] = proc
        return proc.start()

    def listed(self) -> dict[str, dict]:
        return {n["name"]: n for n in httpx.get(self.daemon.http + "/v1/nodes", timeout=10).json()["nodes"]}

    def loaded(self) -> dict[str, dict]:
        return {m["name"]: m for m in httpx.get(self.daemon.http + "/v1/loaded", timeout=10).json().get("models", [])}

    def wait(self, what: str, check, timeout: float = 30.0):  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; daemon log: "
                             + (self.daemon.home / "serve.log").read_text()[-3000:])

    def chat(self, model: str = "smollm2", tokens: int = 8) -> httpx.Response:
        return httpx.post(self.daemon.http + "/v1/chat/completions", timeout=120, json={
            "model": model, "max_tokens": tokens, "messages": [{"role": "user", "content": "Say hello."}]})

    def events(self, kinds: list[int]) -> list[events_pb2.Event]:
        with grpc.insecure_channel(self.daemon.grpc_addr) as channel:
            stub = events_pb2_grpc.EventServiceStub(channel)
            out: list[events_pb2.Event] = []
            try:
                for event in stub.StreamEvents(api_events_pb2.StreamEventsRequest(kinds=kinds), timeout=1.5):
                    out.append(event)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
            return out


def _fingerprint(log: Path) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "--fingerprint sha256:" in line:
                return line.rsplit("--fingerprint ", 1)[1].strip()
        time.sleep(0.1)
    raise AssertionError("the daemon printed no node fingerprint: " + log.read_text()[-2000:])


def _start_daemon(home: Path, http_port: int, grpc_port: int, node_port: int, bind: str, **env: str) -> DaemonProc:
    d = DaemonProc(home=home, http_port=http_port, grpc_port=grpc_port, extra_env={
        "OMG_NODE_TOKEN": TOKEN, "OMG_NODE_ADDR": f"{bind}:{node_port}", "OMG_NODE_HEARTBEAT_S": "0.25",
        "OMG_NODE_DOWN_AFTER_S": "2", "OMG_RAM_BUDGET_MB": "20", **env})  # nothing fits here: nodes serve
    return d.start()


HUB_REPO = "test-org/smol-variant-GGUF"


@pytest.fixture(scope="module")
def hub(gguf_path: Path) -> Iterator[FakeHub]:
    # Other bytes than the store's smollm2, so no node holds them before they are pulled.
    with FakeHub([FakeRepo(HUB_REPO, {"smol.Q4_1.gguf": gguf_with_uint32(gguf_path, "omg.test.variant", 2)})]) as h:
        yield h


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path, hub: FakeHub) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("nodes")
    use_netns = netns_available()
    node_port = free_port()
    d = _start_daemon(tmp / "daemon", free_port(), free_port(), node_port, "0.0.0.0" if use_netns else "127.0.0.1",
                      HF_ENDPOINT=hub.endpoint, HF_HUB_CACHE=str(tmp / "daemon-hf"), HF_HUB_DISABLE_XET="1")
    c = Cluster(d, node_port, _fingerprint(d.home / "serve.log"), [], {}, tmp, use_netns)
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "smollm2").returncode == 0
        c.node("a", 1, ram_mb=150, OMG_NODE_LABELS="tier=small")  # a 135 MB budget: SmolLM2 needs ~240 MB
        c.node("b", 2, ram_mb=3000, OMG_NODE_LABELS="tier=big")
        yield c
    finally:
        for n in c.nodes.values():
            with contextlib.suppress(Exception):
                n.stop()
        d.stop()
        for h in c.hosts:
            h.remove()


def test_nodes_are_listed_with_their_inventory_and_the_daemon_machine(cluster: Cluster) -> None:
    nodes = cluster.listed()
    assert set(nodes) >= {"local", "a", "b"}
    assert nodes["local"]["state"] == "up" and nodes["local"].get("models", []) == ["smollm2"]
    b = nodes["b"]
    assert b["state"] == "up" and b["ramTotal"] == str(3000 * MB) and b["labels"] == {"tier": "big"}
    assert b["gpus"][0]["name"] == "Injected GPU" and b["address"].endswith(f":{cluster.nodes['b'].port}")
    assert cluster.netns is False or b["address"].startswith("10.231.")  # its own host's address
    out = cluster.daemon.omg("node", "ls")
    assert out.returncode == 0, out.stderr
    assert "NAME" in out.stdout and "tier=big" in out.stdout and "(this machine)" in out.stdout
    joined = [e for e in cluster.events([events_pb2.EVENT_KIND_NODE]) if e.attributes.get("state") == "joined"]
    assert {e.subject for e in joined} >= {"node:a", "node:b"}
    top = PtySession(["top", "--interval", "0.5"], cluster.daemon.env)
    try:
        screen = top.expect("HEARTBEAT", timeout=30)  # the nodes table, with each node's state
        top.read_for(1.0)
        screen += top.screen
        assert "nodes" in screen and "Injected GPU" in screen and "BUDGET USED" in screen
    finally:
        top.close()


def test_a_wrong_token_is_refused_and_every_link_is_tls(cluster: Cluster) -> None:
    wrong = NodeProc(cluster.nodes["a"].host, "intruder", cluster.tmp / "intruder", cluster.node_port,
                     "not-the-token", cluster.fingerprint)
    wrong.start(wait=False)
    assert wrong.proc is not None and wrong.proc.wait(30) == 1
    assert "refused this node" in wrong.log.read_text() and "join token" in wrong.log.read_text()
    assert "intruder" not in cluster.listed()
    # A wrong fingerprint: the node refuses the daemon before sending its token.
    fake = NodeProc(cluster.nodes["a"].host, "fooled", cluster.tmp / "fooled", cluster.node_port, TOKEN,
                    "sha256:" + "0" * 64)
    fake.start(wait=False)
    assert fake.proc is not None and fake.proc.wait(30) == 1 and "refusing to join" in fake.log.read_text()
    # The node listener and a node's agent speak only TLS; the agent serves only the session's secret.
    b = cluster.listed()["b"]["address"]
    host, port = b.rsplit(":", 1)
    for target in (f"127.0.0.1:{cluster.node_port}", b):
        with grpc.insecure_channel(target) as plain:
            with pytest.raises(grpc.RpcError) as e:
                node_pb2_grpc.NodeAgentServiceStub(plain).StopWorker(node_pb2.StopWorkerRequest(worker_id="x"), timeout=3)
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    pem = ssl.get_server_certificate((host, int(port))).encode()
    creds = grpc.ssl_channel_credentials(root_certificates=pem)
    with grpc.secure_channel(b, creds, options=[("grpc.ssl_target_name_override", "ohmygpu-node")]) as tls:
        with pytest.raises(grpc.RpcError) as e:
            node_pb2_grpc.NodeAgentServiceStub(tls).StopWorker(node_pb2.StopWorkerRequest(worker_id="x"), timeout=5,
                                                              metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_model_too_big_for_node_a_loads_on_b_with_its_files_streamed(cluster: Cluster) -> None:
    client = openai.OpenAI(base_url=cluster.daemon.http + "/v1", api_key="none")
    stream = client.chat.completions.create(model="smollm2", stream=True, max_tokens=16,
                                            messages=[{"role": "user", "content": "Count to five."}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip()
    loaded = cluster.loaded()["smollm2"]
    assert loaded["node"] == "b"
    ps = cluster.daemon.omg("ps")
    assert ps.returncode == 0 and "NODE" in ps.stdout and " b " in ps.stdout
    # The files were streamed (node b has no hub access) and verified into b's own store.
    store = ModelStore(cluster.nodes["b"].home)
    try:
        record = store.get("smollm2")
    finally:
        store.close()
    daemon_store = ModelStore(cluster.daemon.home)
    try:
        ours = daemon_store.get("smollm2")
    finally:
        daemon_store.close()
    assert [a.sha256 for a in record.artifacts] == [a.sha256 for a in ours.artifacts]
    assert Path(record.artifacts[0].local_path).is_relative_to(cluster.nodes["b"].home)
    assert "smollm2" in cluster.listed()["b"].get("models", []) and "smollm2" not in cluster.listed()["a"].get("models", [])
    sent = [e for e in cluster.events([events_pb2.EVENT_KIND_DOWNLOAD]) if e.subject == "node:b"]
    assert any("streamed from the daemon" in e.message for e in sent) and sent[-1].attributes["state"] == "done"
    # /api/ps reports the worker as the node measured it.
    ps_ollama = httpx.get(cluster.daemon.http + "/api/ps", timeout=10).json().get("models", [])
    assert ps_ollama[0]["name"].startswith("smollm2") and ps_ollama[0]["size"] > 0


def test_a_model_already_on_a_node_is_placed_there(cluster: Cluster) -> None:
    cluster.node("c", 3, ram_mb=6000, OMG_NODE_LABELS="tier=big")  # more room than b: spread alone picks c
    assert httpx.post(cluster.daemon.http + "/v1/loaded/smollm2:unload", json={}, timeout=30).status_code == 200
    assert cluster.chat().status_code == 200
    assert cluster.loaded()["smollm2"]["node"] == "b"  # b holds the files; c would need them sent


def test_a_flipped_byte_in_transit_is_caught_and_nothing_is_kept(cluster: Cluster, gguf_path: Path) -> None:
    copy = cluster.tmp / "flipped.gguf"  # other bytes than smollm2's, so no node holds them already
    copy.write_bytes(gguf_with_uint32(gguf_path, "omg.test.variant", 1))
    assert cluster.daemon.omg("model", "add", str(copy), "--name", "flipped").returncode == 0
    with open(copy, "r+b") as f:  # after its sha256 was recorded: the bytes sent will not match it
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = cluster.chat("flipped")
    assert r.status_code == 502, r.text
    assert "sha256" in r.json()["error"]["message"] and "nothing was kept" in r.json()["error"]["message"]
    for name in ("b", "c"):
        home = cluster.nodes[name].home
        store = ModelStore(home)
        try:
            assert "flipped" not in [m.name for m in store.list()]
        finally:
            store.close()
        incoming = home / "received" / ".incoming"
        assert not incoming.exists() or not any(incoming.iterdir())
    assert cluster.daemon.omg("model", "rm", "flipped").returncode == 0


def test_kill_9_of_a_node_mid_stream_errors_the_client_and_the_next_request_goes_elsewhere(cluster: Cluster) -> None:
    assert cluster.loaded()["smollm2"]["node"] == "b"
    worker = cluster.loaded()["smollm2"]["pid"]
    lines: list[str] = []
    with httpx.stream("POST", cluster.daemon.http + "/v1/chat/completions", timeout=120, json={
            "model": "smollm2", "stream": True, "max_tokens": 400, "temperature": 0.0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
                if len(lines) == 3:
                    cluster.nodes["b"].kill()
    assert lines[-1] != "data: [DONE]"
    assert any('"error"' in line for line in lines[3:]), lines[-3:]
    cluster.wait("node b down", lambda: cluster.listed()["b"]["state"] == "down", timeout=10)
    r = cluster.chat()
    assert r.status_code == 200, r.text
    assert cluster.loaded()["smollm2"]["node"] == "c"
    # The node's worker did not outlive its agent.
    cluster.wait("b's worker gone", lambda: not os.path.exists(f"/proc/{worker}") or
                 open(f"/proc/{worker}/stat").read().split()[2] == "Z", timeout=15)
    # b comes back under its name and reports what its store still holds.
    b = cluster.nodes["b"]
    b.start()
    nodes = cluster.wait("b back", lambda: (n := cluster.listed())["b"]["state"] == "up" and n)
    assert "smollm2" in nodes["b"].get("models", [])
    states = [e.attributes.get("state") for e in cluster.events([events_pb2.EVENT_KIND_NODE]) if e.subject == "node:b"]
    assert states[-3:] == ["joined", "down", "back"] or states[-2:] == ["down", "back"], states


def test_a_worker_crash_on_a_node_is_reported_and_the_model_restarts(cluster: Cluster) -> None:
    model = cluster.loaded()["smollm2"]
    os.kill(model["pid"], signal.SIGKILL)
    cluster.wait("the crash report", lambda: any("on node" in e.message and "SIGKILL" in e.message
                                                 for e in cluster.events([events_pb2.EVENT_KIND_CRASH])))
    cluster.wait("the worker dropped", lambda: "smollm2" not in cluster.loaded())
    assert cluster.chat().status_code == 200
    assert cluster.loaded()["smollm2"]["pid"] != model["pid"]


def test_cutting_a_link_marks_the_node_down_and_its_pinned_run_is_placed_again(cluster: Cluster) -> None:
    assert httpx.post(cluster.daemon.http + "/v1/loaded/smollm2:unload", json={}, timeout=30).status_code == 200
    run = cluster.daemon.omg("run", "smollm2", "--label", "tier=big", "--node", "c", "--json", timeout=120)
    assert run.returncode == 0, run.stderr
    run_id = json.loads(run.stdout)["id"]
    assert json.loads(run.stdout)["node"] == "c"
    cluster.daemon.omg("run", "stop", run_id)
    # A run by label alone: it may move between the nodes carrying it.
    run = cluster.daemon.omg("run", "smollm2", "--label", "tier=big", "--json", timeout=120)
    assert run.returncode == 0, run.stderr
    run_id, first = json.loads(run.stdout)["id"], json.loads(run.stdout)["node"]
    assert first in ("b", "c")
    other = "b" if first == "c" else "c"
    cut = time.monotonic()
    cluster.nodes[first].cut()
    try:
        cluster.wait(f"{first} down", lambda: cluster.listed()[first]["state"] == "down", timeout=10)
        took = time.monotonic() - cut
        assert took < 2 + 2.5, f"marked down after {took:.1f}s (OMG_NODE_DOWN_AFTER_S=2)"
        runs = cluster.wait("the run placed again", lambda: [
            r for r in json.loads(cluster.daemon.omg("run", "ls", "--json").stdout)["runs"]
            if r["id"] == run_id and r.get("node") == other])
        assert runs[0]["state"] == "RUN_STATE_RUNNING"
        assert cluster.chat().status_code == 200 and cluster.loaded()["smollm2"]["node"] == other
        ls = cluster.daemon.omg("run", "ls")
        assert "NODE" in ls.stdout and other in ls.stdout
        logs = cluster.daemon.omg("run", "logs", run_id)  # the worker's log, from its node
        assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    finally:
        cluster.nodes[first].restore()
    cluster.wait(f"{first} back", lambda: cluster.listed()[first]["state"] == "up", timeout=30)
    cluster.run_id = run_id  # type: ignore[attr-defined]  # the next test restarts the daemon with it


def test_a_daemon_restart_finds_its_nodes_again_and_restores_the_run_onto_one(cluster: Cluster) -> None:
    d = cluster.daemon
    run_id = getattr(cluster, "run_id")
    d.stop()
    bind = "0.0.0.0" if cluster.netns else "127.0.0.1"
    cluster.daemon = _start_daemon(d.home, d.http_port, d.grpc_port, cluster.node_port, bind,
                                   **{k: v for k, v in d.extra_env.items() if k.startswith("HF_")})
    cluster.wait("the nodes rejoined", lambda: all(
        n["state"] == "up" for name, n in cluster.listed().items() if name in ("a", "b", "c"))
        and len(cluster.listed()) == 4, timeout=40)
    run = cluster.wait("the run restored", lambda: [
        r for r in json.loads(cluster.daemon.omg("run", "ls", "--json").stdout)["runs"]
        if r["id"] == run_id and r["state"] == "RUN_STATE_RUNNING" and r.get("node") in ("b", "c")], timeout=60)
    assert run and cluster.loaded()["smollm2"]["node"] == run[0]["node"]
    assert cluster.chat().status_code == 200
    cluster.daemon.omg("run", "stop", run_id)


def test_an_unknown_node_or_label_gets_a_clear_error(cluster: Cluster) -> None:
    out = cluster.daemon.omg("run", "smollm2", "--node", "nowhere")
    assert out.returncode != 0 and "no node is named 'nowhere'" in out.stderr
    out = cluster.daemon.omg("run", "smollm2", "--label", "gpu=a100")
    assert out.returncode != 0 and "gpu=a100" in out.stderr


def test_pull_to_a_node_that_pulls_itself_and_to_one_that_is_sent_the_files(cluster: Cluster, hub: FakeHub) -> None:
    # Node h reaches the hub (a loopback host: the fake hub listens on 127.0.0.1); b does not.
    h = NodeProc(Host(9, addr="127.0.0.19"), "h", cluster.tmp / "node-h", cluster.node_port, TOKEN,
                 cluster.fingerprint, extra_env={"OMG_NODE_HUB": "on", "HF_ENDPOINT": hub.endpoint,
                                                 "HF_HUB_DISABLE_XET": "1", "OMG_RAM_BUDGET_MB": "3000"})
    if cluster.netns:  # the daemon listens on every address; a loopback host dials 127.0.0.1
        h.host.gateway = "127.0.0.1"
    cluster.nodes["h"] = h.start()
    assert cluster.listed()["h"]["hubAccess"] is True and not cluster.listed()["b"].get("hubAccess")
    served = hub.bytes_served
    out = cluster.daemon.omg("pull", f"hf.co/{HUB_REPO}:Q4_1", "--name", "variant", "--node", "h", "--quiet",
                             timeout=300)
    assert out.returncode == 0, out.stderr
    size = len(hub.repos[HUB_REPO].files["smol.Q4_1.gguf"])
    assert hub.bytes_served - served == 2 * size  # the daemon's pull, then the node's own
    store = ModelStore(h.home)
    try:
        record = store.get("variant")
    finally:
        store.close()
    assert record.revision.commit == hub.repos[HUB_REPO].commit
    assert (h.home / "hf").is_dir() and str(h.home / "hf") in record.artifacts[0].local_path  # its HF cache
    jobs = json.loads(cluster.daemon.omg("job", "list", "--json").stdout)["jobs"]
    job = next(j for j in jobs if j.get("model") == "variant")
    assert any(f["filename"] == "to node h" and f["completed"] == f["total"] for f in job["files"])
    pulled = [e for e in cluster.events([events_pb2.EVENT_KIND_DOWNLOAD]) if e.subject == "node:h"]
    assert any("pulled by the node from the hub" in e.message for e in pulled)
    # Node b has no hub: the same command streams the files from the daemon's store.
    out = cluster.daemon.omg("pull", f"hf.co/{HUB_REPO}:Q4_1", "--name", "variant", "--node", "b", "--quiet",
                             timeout=300)
    assert out.returncode == 0, out.stderr
    assert "variant" in cluster.listed()["b"].get("models", [])
    assert hub.bytes_served - served == 2 * size  # nothing more from the hub
    # A node that does not exist is a clear failure of the job.
    out = cluster.daemon.omg("pull", f"hf.co/{HUB_REPO}:Q4_1", "--name", "variant", "--node", "nowhere", "--quiet")
    assert out.returncode != 0 and "no node is named 'nowhere'" in out.stderr
