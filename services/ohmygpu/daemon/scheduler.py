"""Placement and eviction glue: which node and device a load goes to, and what is unloaded to
make room. The decisions are pure (daemon/placement.py); this module gathers their numbers from
the live workers and the nodes, and applies them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument, NotFound, Unavailable
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.nodes import Node
from ohmygpu.daemon.placement import (
    DevicePlacement,
    NeverFits,
    NodeView,
    Resident,
    choose_node,
    place_on_device,
)
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.run.v1 import run_spec_pb2

log = logging.getLogger("ohmygpu.orchestrator")


def _vram_used(workers: Mapping[WorkerKey, Worker], node: int) -> dict[int, int]:
    used: dict[int, int] = {}
    for w in workers.values():
        if w.alive and w.node == node and w.device.startswith("cuda:"):
            used[int(w.device[5:])] = used.get(int(w.device[5:]), 0) + w.vram_estimate
    return used


class Scheduler:
    """Places loads on a list of nodes (node 0: this machine)."""

    def __init__(self, settings: Settings, nodes: list[Node]) -> None:
        self.settings = settings
        self.nodes = nodes

    def matches(self, index: int, spec: run_spec_pb2.RunSpec) -> bool:
        """Whether node `index` is one the spec allows (its node name and labels)."""
        node = next((n for n in self.nodes if n.index == index), None)
        r = spec.resources
        return node is not None and (not r.node or node.name == r.node) \
            and all(node.labels.get(k) == v for k, v in r.node_labels.items())

    def candidates(self, spec: run_spec_pb2.RunSpec, model: str) -> list[Node]:
        """The nodes that are up and match the spec's node and labels. Raises NotFound for an
        unknown node name or labels no node carries (a restored run waits for such a node to
        join), Unavailable when the matching nodes are all down."""
        named, wanted = spec.resources.node, dict(spec.resources.node_labels)
        matching = [n for n in self.nodes if self.matches(n.index, spec)]
        if not matching:
            if named and not any(n.name == named for n in self.nodes):
                raise NotFound(f"no node is named '{named}' (`omg node ls` lists them)")
            labels = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
            raise NotFound(f"no node carries the labels {labels} that '{model}' asks for "
                           "(`omg node ls` shows each node's labels)")
        up = [n for n in matching if n.up]
        if not up:
            down = ", ".join(f"{n.name} ({n.down_reason})" for n in matching)
            raise Unavailable(f"'{model}' can only go to nodes that are down now: {down}; try again when one is back")
        return up

    async def _view(self, node: Node, workers: Mapping[WorkerKey, Worker], runtime: str,
                    with_gpus: bool, record: assets_pb2.InstallRecord | None = None) -> NodeView:
        residents = tuple(Resident(k, w.memory_bytes, w.in_flight, w.last_used, w.pinned)
                          for k, w in workers.items() if w.alive and w.node == node.index)
        gpus: tuple = ()
        if with_gpus:
            inv = await asyncio.to_thread(node.inventory)
            if inv.gpus and await asyncio.to_thread(node.gpu_capable, runtime):
                gpus = inv.gpus
        holds = record is None or node.holds(record)  # in memory on every node: no thread hop
        return NodeView(node.index, node.ram_budget, residents, gpus, _vram_used(workers, node.index), holds)

    async def make_room(self, key: WorkerKey, need: int, layers: int, spec: run_spec_pb2.RunSpec,
                        workers: Mapping[WorkerKey, Worker],
                        unload: Callable[[WorkerKey, str], Awaitable[object]],
                        record: assets_pb2.InstallRecord | None = None) -> Node:
        """Choose the node for a load needing `need` bytes and unload there the least recently
        used idle workers it needs gone (budget and max_loaded_models); returns the node.
        Raises NeverFits or Unavailable (see placement.choose_node), and what `candidates` raises."""
        nodes = self.candidates(spec, key.model)
        # One node: its GPUs cannot change the choice, so they are not probed twice per load.
        with_gpus = len(nodes) > 1
        views = [await self._view(n, workers, spec.runtime, with_gpus, record) for n in nodes]
        try:
            choice = choose_node(key, need, layers, views, max_loaded=max(1, self.settings.max_loaded_models),
                                 requested=self._requested(spec), vram_budget=self.settings.vram_budget_mb << 20,
                                 reserve=self.settings.vram_reserve_mb << 20,
                                 allow_partial=bool(self.settings.partial_offload), strategy=self.settings.placement)
        except NeverFits as e:
            down = [n for n in self.nodes if not n.up]
            if down:  # one of them might hold it: a 503 to retry, not a 507 for ever
                raise Unavailable(f"{e.message}; on the nodes that are up. Down now: "
                                  + ", ".join(f"{n.name} ({n.down_reason})" for n in down)) from None
            raise
        for victim in choice.evict:
            log.info("unloading %s (least recently used) to load %s", victim, key)
            await unload(victim, f"evicted to load {key}")  # type: ignore[arg-type]  # a WorkerKey
        return next(n for n in self.nodes if n.index == choice.node)

    @staticmethod
    def _requested(spec: run_spec_pb2.RunSpec) -> str:
        return spec.resources.device if spec.resources.device not in ("", "cpu") else ""

    async def place(self, node: Node, record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec,
                    need: int, workers: Mapping[WorkerKey, Worker]) -> DevicePlacement:
        """Choose the device (and GPU layers) on `node` for a load needing `need` bytes, with the
        memory the evictions freed, and write them into `spec`. A RunSpec's own gpu_layers wins
        over the computed split."""
        inv = await asyncio.to_thread(node.inventory)
        gpus = inv.gpus if inv.gpus and await asyncio.to_thread(node.gpu_capable, spec.runtime) else ()
        requested = self._requested(spec)
        if requested and inv.gpus and not gpus:
            raise InvalidArgument(f"device {requested} was asked for, but the installed {spec.runtime} library "
                                  "has no GPU support (install a CUDA build of it)", param="device")
        placement = place_on_device(
            need, record.gguf.block_count, gpus, requested=requested,
            vram_budget=self.settings.vram_budget_mb << 20, reserve=self.settings.vram_reserve_mb << 20,
            used_by_us=_vram_used(workers, node.index), allow_partial=bool(self.settings.partial_offload),
            model_cap=spec.resources.vram_budget_mb << 20)  # a run's own VRAM budget
        spec.resources.device = placement.device
        if not spec.resources.HasField("gpu_layers"):
            spec.resources.gpu_layers = placement.gpu_layers
        return placement

