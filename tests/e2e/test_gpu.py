"""GPU paths, run where an NVIDIA GPU is lent (skipped elsewhere): placement on the GPU, answers
from offloaded models, and VRAM given back when a worker stops (LocalAI #7958 leaked it)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from ohmygpu.daemon.devices import probe
from ohmygpu.runtimes.api.registry import supports_gpu

from tests.helpers import SENTENCE, new_daemon, word_error_rate

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _need(runtime: str) -> None:
    if not probe().gpus:
        pytest.skip("no NVIDIA GPU on this machine")
    if not supports_gpu(runtime):
        pytest.skip(f"the installed {runtime} library has no GPU support")


def _gpu_pids() -> set[int]:
    return {pid for g in probe().gpus for pid in g.processes}


def test_llamacpp_offload_and_vram_freed(tmp_path: Path, gguf_path: Path) -> None:
    _need("llamacpp")
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        r = httpx.post(f"{d.http}/api/chat", timeout=120, json={
            "model": "m", "stream": False, "messages": [{"role": "user", "content": "Say hi"}],
            "options": {"num_predict": 8}})
        assert r.status_code == 200 and r.json()["message"]["content"]
        loaded = json.loads(d.omg("ps", "--json").stdout)["models"][0]
        assert loaded["device"].startswith("cuda:")
        pid = int(loaded["pid"])
        assert pid in _gpu_pids()
        assert d.omg("run", "ls").returncode == 0
        assert httpx.post(f"{d.http}/v1/loaded/m:unload", json={}).json()["unloaded"] is True
        deadline = time.monotonic() + 10
        while pid in _gpu_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid not in _gpu_pids()  # the stopped worker holds no VRAM
    finally:
        d.stop()


def test_whisper_on_the_gpu(tmp_path: Path, whisper_path: Path, audio: dict[str, Path]) -> None:
    _need("whisper")
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(whisper_path), "--name", "w").returncode == 0
        with open(audio["wav"], "rb") as f:
            r = httpx.post(f"{d.http}/v1/audio/transcriptions", files={"file": f}, data={"model": "w"}, timeout=120)
        assert r.status_code == 200 and word_error_rate(SENTENCE, r.json()["text"]) < 0.3
        loaded = json.loads(d.omg("ps", "--json").stdout)["models"][0]
        assert loaded["device"].startswith("cuda:")
    finally:
        d.stop()


def test_seeded_answers_do_not_depend_on_batching_on_the_gpu(tmp_path: Path, gguf_path: Path) -> None:
    # GPU kernels are chosen by batch size, so an offloaded model decodes a seeded sequence in
    # steps of its own (engine.py): alone, beside three other streams, or four copies at once,
    # the answer is the same.
    import threading

    _need("llamacpp")
    d = new_daemon(tmp_path, extra_env={"OMG_NUM_PARALLEL": "4"}).start()
    try:
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0

        def ask(content: str, **extra: object) -> str:
            r = httpx.post(f"{d.http}/v1/chat/completions", timeout=120, json={
                "model": "m", "messages": [{"role": "user", "content": content}], **extra})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        seeded = {"temperature": 1.0, "seed": 5, "max_tokens": 32}
        alone = ask("Tell me a story.", **seeded)
        results: dict[int, str] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, ask(
            f"Write about {i}.", temperature=0.9, max_tokens=96))) for i in range(3)]
        threads.append(threading.Thread(target=lambda: results.__setitem__(3, ask("Tell me a story.", **seeded))))
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(120)
        assert results[3] == alone
        copies: dict[int, str] = {}
        threads = [threading.Thread(target=lambda i=i: copies.__setitem__(i, ask("Tell me a story.", **seeded)))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert list(copies.values()) == [alone] * 4
    finally:
        d.stop()


def test_a_node_reports_its_gpu_and_a_model_placed_there_offloads(tmp_path: Path, gguf_path: Path) -> None:
    """A node agent on the GPU machine (its own home): it reports NVML's GPUs with llama.cpp able
    to use them, and a model the daemon cannot hold itself loads on the node's GPU."""
    _need("llamacpp")
    from tests.helpers import free_port
    from tests.node_hosts import Host, NodeProc

    node_port = free_port()
    d = new_daemon(tmp_path, extra_env={"OMG_NODE_TOKEN": "t", "OMG_NODE_ADDR": f"127.0.0.1:{node_port}",
                                        "OMG_RAM_BUDGET_MB": "20"}).start()
    log = (d.home / "serve.log").read_text()
    fingerprint = log.split("--fingerprint ", 1)[1].split()[0]
    node = NodeProc(Host(0), "gpu-node", tmp_path / "node", node_port, "t", fingerprint).start()
    try:
        nodes = {n["name"]: n for n in httpx.get(f"{d.http}/v1/nodes", timeout=10).json()["nodes"]}
        assert nodes["gpu-node"]["gpus"] and nodes["gpu-node"]["gpus"][0]["memoryTotal"]
        assert d.omg("model", "add", str(gguf_path), "--name", "m").returncode == 0
        r = httpx.post(f"{d.http}/api/chat", timeout=180, json={
            "model": "m", "stream": False, "messages": [{"role": "user", "content": "Say hi"}],
            "options": {"num_predict": 8}})
        assert r.status_code == 200 and r.json()["message"]["content"]
        loaded = json.loads(d.omg("ps", "--json").stdout)["models"][0]
        assert loaded["node"] == "gpu-node" and loaded["device"].startswith("cuda:")
        assert int(loaded["pid"]) in _gpu_pids()
    finally:
        node.stop()
        d.stop()


def test_sdcpp_generates_on_the_gpu_and_frees_its_vram(tmp_path: Path) -> None:
    """stable-diffusion.cpp built with CUDA (scripts/gpu-check-images.sh): the image worker is
    placed on the GPU, a seed gives the same pixels twice there, and unloading gives VRAM back."""
    _need("sdcpp")
    import base64

    from tests.helpers import built_once, load_script

    sd_model = built_once(load_script("tiny_sd").cached)  # requested here: building it needs no GPU-less skip first
    d = new_daemon(tmp_path).start()
    try:
        assert d.omg("model", "add", str(sd_model), "--name", "sd").returncode == 0

        def generate() -> bytes:
            r = httpx.post(d.http + "/v1/images/generations", timeout=300, json={
                "model": "sd", "prompt": "a red boat", "size": "256x256", "steps": 4, "seed": 7})
            assert r.status_code == 200, r.text
            return base64.b64decode(r.json()["data"][0]["b64_json"])

        assert generate() == generate()
        loaded = json.loads(d.omg("ps", "--json").stdout)["models"][0]
        assert loaded["device"].startswith("cuda:"), loaded
        pid = int(loaded["pid"])
        assert pid in _gpu_pids()
        assert httpx.post(f"{d.http}/v1/loaded/sd:unload", json={}).json()["unloaded"] is True
        deadline = time.monotonic() + 10
        while pid in _gpu_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid not in _gpu_pids()
    finally:
        d.stop()
