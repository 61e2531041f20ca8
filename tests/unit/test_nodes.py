"""The scheduler over nodes: placement chooses a (node, device) from a list of shaped nodes (pure),
and the orchestrator launches on the node placement chose (with real tiny processes, no model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ohmygpu.core.errors import Unavailable
from ohmygpu.core.estimate import for_spec
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Gpu, Inventory
from ohmygpu.daemon.nodes import LocalNode, Node
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.placement import NeverFits, NodeView, Resident, choose_node
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.run.v1 import run_spec_pb2

from tests.unit.test_keep_alive_clock import SleeperWorker

MiB, GiB = 1 << 20, 1 << 30


def gpu(index: int, free_gib: float, total_gib: float = 24) -> Gpu:
    return Gpu(index, "test-gpu", int(total_gib * GiB), int(free_gib * GiB), int((total_gib - free_gib) * GiB))


def node(index: int, budget_gib: float, *residents: Resident, gpus: tuple = ()) -> NodeView:
    return NodeView(index, int(budget_gib * GiB), tuple(residents), gpus, {})


def resident(name: str, gib: float, *, busy: int = 0, used: float = 0.0, pinned: bool = False) -> Resident:
    return Resident(name, int(gib * GiB), busy, used, pinned)


def test_ram_only_nodes_take_the_first_that_fits_without_evicting() -> None:
    nodes = [node(0, 8, resident("a", 6, used=1)), node(1, 8)]
    choice = choose_node("new", 4 * GiB, 32, nodes, max_loaded=9)
    assert (choice.node, choice.evict, choice.device.device) == (1, [], "cpu")
    # Both empty: the first node (the daemon's own machine) wins the tie.
    assert choose_node("new", 4 * GiB, 32, [node(0, 8), node(1, 8)], max_loaded=9).node == 0


def test_a_node_holding_the_files_wins_then_spread_or_pack_decides() -> None:
    small, big = node(0, 8, resident("a", 2, used=1)), node(1, 16)
    # Spread (the default): the most budget left after the load; pack: the least.
    assert choose_node("new", 4 * GiB, 32, [small, big], max_loaded=9).node == 1
    assert choose_node("new", 4 * GiB, 32, [small, big], max_loaded=9, strategy="pack").node == 0
    # A node whose store lacks the files (they would be sent first) loses to one holding them,
    # whatever the strategy; a node that must evict loses to one without the files.
    lacking = NodeView(1, 16 * GiB, (), (), {}, holds_files=False)
    assert choose_node("new", 4 * GiB, 32, [small, lacking], max_loaded=9).node == 0
    full = node(0, 4, resident("a", 2, used=1))
    assert choose_node("new", 4 * GiB, 32, [full, lacking], max_loaded=9).node == 1


def test_a_node_with_a_gpu_that_holds_the_model_is_preferred() -> None:
    nodes = [node(0, 32), node(1, 32, gpus=(gpu(0, 2),)), node(2, 32, gpus=(gpu(0, 4), gpu(1, 20)))]
    choice = choose_node("new", 6 * GiB, 32, nodes, max_loaded=9)
    assert (choice.node, choice.device.device, choice.device.gpu_layers) == (2, "cuda:1", -1)
    # A partial offload beats the CPU; without partial offload the GPU node is no better.
    partial = choose_node("new", 6 * GiB, 32, nodes[:2], max_loaded=9)
    assert partial.node == 1 and partial.device.device == "cuda:0" and 0 < partial.device.gpu_layers < 32
    assert choose_node("new", 6 * GiB, 32, nodes[:2], max_loaded=9, allow_partial=False).node == 0


def test_a_full_node_is_passed_over_and_evicts_only_when_every_node_needs_it() -> None:
    full = node(0, 8, resident("busy", 7, busy=1))
    assert choose_node("new", 2 * GiB, 32, [full, node(1, 4)], max_loaded=9).node == 1
    # Every node would have to unload something: the least-evicting one does, LRU first.
    nodes = [node(0, 8, resident("x", 4, used=1), resident("y", 4, used=2)), node(1, 8, resident("z", 7, used=5))]
    choice = choose_node("new", 3 * GiB, 32, nodes, max_loaded=9)
    assert (choice.node, choice.evict) == (0, ["x"])
    # max_loaded counts per node.
    assert choose_node("new", 1 * GiB, 32, [node(0, 8, resident("a", 1)), node(1, 8)], max_loaded=1).node == 1


def test_a_pinned_model_is_never_evicted_so_the_load_goes_elsewhere_or_waits() -> None:
    pinned = node(0, 8, resident("run", 6, pinned=True, used=0))
    assert choose_node("new", 4 * GiB, 32, [pinned, node(1, 8, resident("idle", 6, used=9))],
                       max_loaded=9).evict == ["idle"]
    with pytest.raises(Unavailable, match="busy or pinned"):
        choose_node("new", 4 * GiB, 32, [pinned], max_loaded=9)
    # One node could once its pinned run ends, another never: "try again", not "never fits".
    with pytest.raises(Unavailable):
        choose_node("new", 4 * GiB, 32, [node(0, 2), pinned], max_loaded=9)


def test_a_model_no_node_can_ever_hold_never_fits() -> None:
    with pytest.raises(NeverFits, match="needs about 10240 MiB"):
        choose_node("new", 10 * GiB, 32, [node(0, 8), node(1, 4, gpus=(gpu(0, 20),))], max_loaded=9)
    with pytest.raises(NeverFits, match="no node"):
        choose_node("new", 1 * GiB, 32, [], max_loaded=9)


class FakeRemote(LocalNode):
    """A second node: its own inventory and budget; its workers are local sleepers, recorded."""

    def __init__(self, settings: Settings, store: ModelStore, tmp_path: Path, budget_mib: int) -> None:
        self.launched: list[str] = []

        async def launch(name, runtime, record, spec):
            self.launched.append(name)
            w = SleeperWorker(name, runtime, tmp_path, tmp_path / "logs")
            await w.start(record, spec, timeout_s=5)
            w.memory_bytes = for_spec(record, spec).total
            return w

        super().__init__(settings, store, launcher=launch, index=1, gpu_capable=lambda runtime: False,
                         inventory=lambda: Inventory(cpu_count=4, ram_total=8 << 30, ram_available=8 << 30))
        self.name = "fake-remote"
        self.ram_budget = budget_mib * MiB


async def test_the_orchestrator_launches_on_the_node_placement_chose(tmp_path: Path, gguf_path: Path) -> None:
    """Node 0 (this machine, shaped by the launcher/inventory arguments) holds one model (packed
    there first); the second model goes to node 1 instead of evicting the first."""
    store = ModelStore(tmp_path)
    for name in ("a", "b"):
        store.add_local(gguf_path, name=name)
    need = for_spec(store.get("a"), run_spec_pb2.RunSpec(resources=run_spec_pb2.Resources(
        context_length=1024, max_concurrency=1))).total
    settings = Settings.load(environ={"OMG_HOME": str(tmp_path), "OMG_CONTEXT_LENGTH": "1024",
                                      "OMG_PLACEMENT": "pack",  # fill node 0 first
                                      "OMG_NUM_PARALLEL": "1",  # room on node 0 for one model, not two
                                      "OMG_RAM_BUDGET_MB": str(need * 3 // 2 // MiB + 1)})
    local_launches: list[str] = []

    async def launch(name, runtime, record, spec):
        local_launches.append(name)
        w = SleeperWorker(name, runtime, tmp_path, tmp_path / "logs")
        await w.start(record, spec, timeout_s=5)
        w.memory_bytes = for_spec(record, spec).total
        return w

    remote = FakeRemote(settings, store, tmp_path, budget_mib=need * 3 // MiB)
    orch = Orchestrator(settings, store, launcher=launch, nodes=[remote],
                        inventory=lambda: Inventory(cpu_count=2, ram_total=64 << 30, ram_available=64 << 30))
    try:
        assert isinstance(orch.nodes[0], Node) and isinstance(remote, Node)
        assert orch.ram_budget == orch.nodes[0].ram_budget == settings.ram_budget_mb * MiB
        a = await orch.worker_for("a")
        b = await orch.worker_for("b")
        assert (a.node, b.node) == (0, 1) and a.alive and b.alive
        assert local_launches == ["a"] and remote.launched == ["b"]
        assert set(orch.workers) == {WorkerKey("a", run_spec_pb2.MODE_CHAT), WorkerKey("b", run_spec_pb2.MODE_CHAT)}
    finally:
        await orch.shutdown()
