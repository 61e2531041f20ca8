"""Nodes: the machines the scheduler places workers on.

A node has an inventory (RAM, GPUs), a launcher (starts a worker for a record and a spec) and the
models its store holds. The machine the daemon runs on is node 0, a LocalNode; a machine running
`omg node join` is a RemoteNode (daemon/remote.py), and nothing else in the scheduler changes: placement (daemon/placement.py) sees a list of NodeView numbers, the
orchestrator a list of Nodes.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Inventory, probe
from ohmygpu.daemon.supervisor import Worker, socket_dir
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.registry import RuntimeEntry, supports_gpu

# Launches a worker for a record; injected so tests can shape failures.
Launcher = Callable[[str, RuntimeEntry, assets_pb2.InstallRecord, run_spec_pb2.RunSpec], Awaitable[Worker]]


@runtime_checkable
class Node(Protocol):
    """One machine workers run on."""

    index: int  # its place in the orchestrator's list; 0 is the daemon's own machine
    name: str  # for events and logs
    ram_budget: int  # bytes our models may use in its RAM
    up: bool  # reachable now; placement skips a node that is down
    down_reason: str  # why it is down
    labels: dict[str, str]  # what a RunSpec's node_labels select
    address: str  # where its agent is reached; empty for the daemon's machine

    def holds(self, record: assets_pb2.InstallRecord) -> bool:
        """Whether its store has `record`'s files (a load elsewhere sends or pulls them first);
        answered from memory (the node's last report), so placement may call it on the loop."""
        ...

    def inventory(self) -> Inventory:
        """What the machine has now (blocking: call it in a thread)."""
        ...

    def gpu_capable(self, runtime: str) -> bool:
        """Whether runtime `runtime`'s library on this node can use a GPU (blocking)."""
        ...

    async def launch(self, name: str, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                     spec: run_spec_pb2.RunSpec) -> Worker:
        """Start a worker serving `record` as `spec` says; raises WorkerFailed and kin."""
        ...

    def close(self) -> None:
        """Release what the node holds on this machine (after its workers stopped)."""
        ...


class LocalNode:
    """The machine the daemon runs on: workers are child processes (daemon/supervisor.py)."""

    def __init__(self, settings: Settings, store: ModelStore, *, launcher: Launcher | None = None,
                 inventory: Callable[[], Inventory] | None = None,
                 gpu_capable: Callable[[str], bool] = supports_gpu, index: int = 0) -> None:
        self.index = index
        self.name = "local"
        self.up = True  # the daemon's own machine is up while the daemon runs
        self.down_reason = ""
        self.labels: dict[str, str] = {}
        self.address = ""
        self.settings = settings
        self.store = store
        self._launcher = launcher or self._spawn  # tests inject one to shape failures
        self._inventory = inventory or probe
        self._gpu_capable = gpu_capable
        self._run_dir: Path | None = None  # the worker socket directory, made at the first launch
        self.log_dir = settings.home_path / "logs"
        inv = self._inventory()
        self.ram_budget = (settings.ram_budget_mb << 20) if settings.ram_budget_mb > 0 \
            else int(inv.ram_available * 0.9)

    def inventory(self) -> Inventory:
        return self._inventory()

    def holds(self, record: assets_pb2.InstallRecord) -> bool:
        return True  # the record is the daemon's own store's

    def gpu_capable(self, runtime: str) -> bool:
        return self._gpu_capable(runtime)

    @property
    def run_dir(self) -> Path:
        """This daemon's private worker socket directory (see supervisor.socket_dir)."""
        if self._run_dir is None:
            self._run_dir = socket_dir()
        return self._run_dir

    async def launch(self, name: str, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                     spec: run_spec_pb2.RunSpec) -> Worker:
        worker = await self._launcher(name, runtime, record, spec)
        worker.node = self.index
        return worker

    async def _spawn(self, name: str, runtime: RuntimeEntry, record: assets_pb2.InstallRecord,
                     spec: run_spec_pb2.RunSpec) -> Worker:
        worker = Worker(name, runtime, self.run_dir, self.log_dir)
        base = self.store.base_of(record)  # an adapter loads over its base (LoadRequest.base)
        await worker.start(record, spec, timeout_s=self.settings.worker_start_timeout_s, base=base)
        return worker

    def close(self) -> None:
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
