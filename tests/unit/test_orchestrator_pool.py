"""The orchestrator's worker pool and memory budget, with a launcher whose workers are real (tiny)
processes that report the memory the daemon estimated for them: no model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from ohmygpu.core.estimate import estimate, for_spec
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Gpu, Inventory
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.placement import NeverFits
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.run.v1 import run_spec_pb2

from tests.unit.test_keep_alive_clock import SleeperWorker

MiB = 1 << 20
CHAT, EMBED = run_spec_pb2.MODE_CHAT, run_spec_pb2.MODE_EMBEDDINGS


def _orchestrator(tmp_path: Path, gguf_path: Path, env: dict[str, str], *, gpus: tuple = (),
                  loads: list[run_spec_pb2.RunSpec] | None = None) -> Orchestrator:
    settings = Settings.load(environ={"OMG_HOME": str(tmp_path), **env})
    store = ModelStore(tmp_path)
    for name in ("a", "b"):
        store.add_local(gguf_path, name=name)

    async def launch(name, runtime, record, spec):
        if loads is not None:
            loads.append(spec)
        w = SleeperWorker(name, runtime, tmp_path, tmp_path / "logs")
        await w.start(record, spec, timeout_s=5)
        w.memory_bytes = for_spec(record, spec).total  # it uses what it was expected to
        return w

    return Orchestrator(settings, store, launcher=launch, gpu_capable=lambda runtime: bool(gpus),
                        inventory=lambda: Inventory(cpu_count=2, ram_total=64 << 30, ram_available=64 << 30,
                                                    gpus=gpus))


def _run(context: int = 0, parallel: int = 0, mode: int = 0) -> run_spec_pb2.RunSpec:
    return run_spec_pb2.RunSpec(run_id="r1", mode=mode, resources=run_spec_pb2.Resources(
        context_length=context, max_concurrency=parallel))


async def test_stopping_a_run_unloads_every_worker_of_its_model(tmp_path: Path, gguf_path: Path) -> None:
    """A pinned LLM with an embeddings worker beside it: unpinning stops both (it raised
    KeyError: 'a#embeddings' and left the run running), and leaves other models alone."""
    orch = _orchestrator(tmp_path, gguf_path, {"OMG_MAX_LOADED_MODELS": "4"})
    try:
        chat = await orch.pin("a", _run(context=512))
        embed = await orch.worker_for("a", mode=EMBED)
        other = await orch.worker_for("b")
        assert set(orch.workers) == {WorkerKey("a", CHAT), WorkerKey("a", EMBED), WorkerKey("b", CHAT)}
        assert str(embed.key) == "a#embeddings" and str(chat.key) == "a"  # labels as before
        assert orch.pinned_run("a") is not None and orch.pinned_worker("a") is chat
        await orch.unpin("a")
        assert set(orch.workers) == {WorkerKey("b", CHAT)}
        assert not chat.alive and not embed.alive and other.alive
        assert orch.pinned_run("a") is None and orch.pinned_worker("a") is None
        # An unpinned model with both workers unloads both too, by the one rule.
        await orch.worker_for("b", mode=EMBED)
        assert await orch.unload("b") and not orch.workers
    finally:
        await orch.shutdown()


async def test_a_big_context_run_evicts_by_its_own_size(tmp_path: Path, gguf_path: Path) -> None:
    """`omg run b --ctx 4096 --parallel 4` needs 4 KV caches; eviction must budget that (it
    budgeted the daemon's default, 1 slot), and placement must see the same number."""
    record = ModelStore(tmp_path).add_local(gguf_path, name="probe")
    small = estimate(record, context_length=1024).total
    big = estimate(record, context_length=4096, parallel=4).total
    assert big > 2 * small
    budget = (small + big) // MiB - 1  # a (small) and b (big) do not fit together; two smalls do
    loads: list[run_spec_pb2.RunSpec] = []
    gpu = Gpu(0, "test-gpu", 80 << 30, 80 << 30, 0)
    orch = _orchestrator(tmp_path, gguf_path, {"OMG_CONTEXT_LENGTH": "1024", "OMG_NUM_PARALLEL": "1",
                                               "OMG_RAM_BUDGET_MB": str(budget), "OMG_MAX_LOADED_MODELS": "4"},
                         gpus=(gpu,), loads=loads)
    try:
        a = await orch.worker_for("a")
        assert a.memory_bytes == small
        b = await orch.pin("b", _run(context=4096, parallel=4))
        assert not a.alive and set(orch.workers) == {WorkerKey("b", CHAT)}  # evicted to make room
        spec = loads[-1]
        assert (spec.resources.context_length, spec.resources.max_concurrency) == (4096, 4)
        assert b.device == "cuda:0" and b.vram_estimate == big == b.memory_bytes  # one estimate for both
    finally:
        await orch.shutdown()


async def test_an_embeddings_worker_is_budgeted_as_one(tmp_path: Path, gguf_path: Path) -> None:
    """The mode is part of the estimate: an embeddings load's batch is its whole context."""
    record = ModelStore(tmp_path).add_local(gguf_path, name="probe")
    spec = run_spec_pb2.RunSpec(mode=EMBED, resources=run_spec_pb2.Resources(context_length=4096))
    chat = estimate(record, context_length=4096)
    assert for_spec(record, spec) == estimate(record, context_length=4096, mode=EMBED)
    assert for_spec(record, spec).kv_cache == chat.kv_cache and for_spec(record, spec) != chat
    orch = _orchestrator(tmp_path / "h", gguf_path, {"OMG_RAM_BUDGET_MB": "1"})
    try:
        with pytest.raises(NeverFits) as e:
            await orch.worker_for("a", mode=EMBED)
        assert "a#embeddings" in e.value.message and not orch.workers
    finally:
        await orch.shutdown()
