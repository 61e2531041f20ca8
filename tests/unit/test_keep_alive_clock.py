"""keep_alive expiry with an injected clock: the orchestrator's own logic, with a launcher that
starts real (tiny) processes so stop() has something real to stop, and a clock we move."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Inventory
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.run.v1 import run_spec_pb2


class SleeperWorker(Worker):
    """A worker whose process is `sleep`: it lives and dies like a worker, but loads nothing."""

    async def start(self, record, spec, *, timeout_s: float) -> None:  # type: ignore[override]
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)",
                                                         start_new_session=True)
        asyncio.get_running_loop().create_task(self._wait_exit())
        self.memory_bytes = 10 << 20


async def test_keep_alive_expiry_follows_the_clock(tmp_path: Path, gguf_path: Path) -> None:
    now = [1000.0]
    settings = Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_KEEP_ALIVE": "5m"})
    store = ModelStore(tmp_path)
    for name in ("a", "b"):
        store.add_local(gguf_path, name=name)

    async def launch(name, runtime, record, spec):
        w = SleeperWorker(name, runtime, tmp_path, tmp_path / "logs")
        await w.start(record, spec, timeout_s=5)
        return w

    orch = Orchestrator(settings, store, launcher=launch, clock=lambda: now[0],
                        inventory=lambda: Inventory(cpu_count=2, ram_total=8 << 30, ram_available=8 << 30))
    try:
        a = await orch.worker_for("a")
        assert a.expires_at == pytest.approx(1300.0)
        orch.set_keep_alive(await orch.worker_for("b"), "-1")
        now[0] = 1299.0
        assert await orch.reap_expired() == []
        now[0] = 1301.0
        a.in_flight = 1  # busy models are never unloaded
        assert await orch.reap_expired() == []
        a.in_flight = 0
        assert await orch.reap_expired() == ["a"] and not a.alive
        now[0] = 10**9
        b = WorkerKey("b", run_spec_pb2.MODE_CHAT)
        assert await orch.reap_expired() == [] and b in orch.workers  # keep_alive -1: forever
        orch.set_keep_alive(orch.workers[b], "0")
        assert await orch.reap_expired() == ["b"]
    finally:
        await orch.shutdown()


async def test_gpu_placement_needs_a_gpu_capable_runtime(tmp_path: Path, gguf_path: Path) -> None:
    from ohmygpu.core.errors import InvalidArgument
    from ohmygpu.daemon.devices import Gpu
    from ohmygpu.run.v1 import run_spec_pb2

    settings = Settings.load(environ={"OMG_HOME": str(tmp_path)})
    store = ModelStore(tmp_path)
    store.add_local(gguf_path, name="m")

    async def launch(name, runtime, record, spec):
        w = SleeperWorker(name, runtime, tmp_path, tmp_path / "logs")
        await w.start(record, spec, timeout_s=5)
        return w

    def machine() -> Inventory:  # one 24 GB GPU, nearly empty
        return Inventory(cpu_count=8, ram_total=32 << 30, ram_available=30 << 30,
                         gpus=(Gpu(0, "test-gpu", 24 << 30, 23 << 30, 1 << 30),))

    asked: list[str] = []
    for capable, device in ((True, "cuda:0"), (False, "cpu")):
        orch = Orchestrator(settings, store, launcher=launch, inventory=machine,
                            gpu_capable=lambda name, c=capable: asked.append(name) or c)
        try:
            assert (await orch.worker_for("m")).device == device
            if not capable:  # a GPU asked for explicitly is an error, not a silent CPU run
                run = run_spec_pb2.RunSpec(resources=run_spec_pb2.Resources(device="cuda:0"))
                await orch.unload("m")
                with pytest.raises(InvalidArgument) as e:
                    await orch.worker_for("m", run=run)
                assert "no GPU support" in e.value.message
        finally:
            await orch.shutdown()
    assert asked and set(asked) == {"llamacpp"}
