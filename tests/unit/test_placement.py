"""Placement and memory estimates on shaped machines (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ohmygpu.core.errors import Unavailable
from ohmygpu.core.estimate import estimate
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.devices import Gpu, Inventory, probe
from ohmygpu.daemon.placement import NeverFits, Resident, choose_evictions

MiB = 1 << 20


def r(name: str, mem: int, *, busy: int = 0, used: float = 0.0, pinned: bool = False) -> Resident:
    return Resident(name, mem * MiB, busy, used, pinned)


def test_fits_without_evicting() -> None:
    assert choose_evictions("new", 100 * MiB, [r("a", 100)], budget=400 * MiB, max_loaded=3) == []


def test_evicts_least_recently_used_first() -> None:
    loaded = [r("old", 150, used=1), r("mid", 150, used=2), r("recent", 150, used=3)]
    assert choose_evictions("new", 150 * MiB, loaded, budget=500 * MiB, max_loaded=9) == ["old"]
    assert choose_evictions("new", 300 * MiB, loaded, budget=500 * MiB, max_loaded=9) == ["old", "mid"]


def test_never_evicts_busy_or_pinned() -> None:
    loaded = [r("busy", 300, busy=1, used=0), r("pinned", 100, pinned=True, used=0), r("idle", 100, used=5)]
    assert choose_evictions("new", 90 * MiB, loaded, budget=600 * MiB, max_loaded=9) == []
    assert choose_evictions("new", 150 * MiB, loaded, budget=600 * MiB, max_loaded=9) == ["idle"]
    with pytest.raises(Unavailable, match="busy or pinned"):
        choose_evictions("new", 250 * MiB, loaded, budget=600 * MiB, max_loaded=9)


def test_can_never_fit_names_need_and_budget() -> None:
    with pytest.raises(NeverFits, match=r"needs about 900 MiB but the memory budget is 512 MiB"):
        choose_evictions("huge", 900 * MiB, [], budget=512 * MiB, max_loaded=3)


def test_max_loaded_models() -> None:
    loaded = [r("a", 1, used=2), r("b", 1, used=1)]
    assert choose_evictions("c", MiB, loaded, budget=10_000 * MiB, max_loaded=2) == ["b"]
    assert choose_evictions("a", MiB, loaded, budget=10_000 * MiB, max_loaded=2) == []  # reload of itself


def test_estimate_of_shipped_model(tmp_path: Path, gguf_path: Path) -> None:
    rec = ModelStore(tmp_path).add_local(gguf_path, name="smol")
    assert rec.gguf.head_count == 9 and rec.gguf.head_count_kv == 3 and rec.gguf.vocab_size == 49152
    small, big = estimate(rec, context_length=1024), estimate(rec, context_length=4096)
    assert 90e6 < small.weights < 98.4e6
    assert big.kv_cache == 4 * small.kv_cache  # linear in context
    assert estimate(rec, context_length=1024, parallel=4).kv_cache == 4 * small.kv_cache
    assert estimate(rec, context_length=100_000).kv_cache == estimate(rec, context_length=8192).kv_cache
    assert 200e6 < big.total < 600e6


def test_inventory_of_this_machine() -> None:
    inv = probe()
    assert inv.cpu_count >= 1 and inv.ram_total > inv.ram_available > 0
    for gpu in inv.gpus:  # real NVML data where there is a GPU; none here is fine
        assert gpu.total >= gpu.used and gpu.name


@pytest.mark.gpu
def test_nvml_reports_the_gpu() -> None:
    gpus = probe().gpus
    if not gpus:
        pytest.skip("no NVIDIA GPU on this machine")
    assert gpus[0].total > 1 << 30 and 0 <= gpus[0].utilization <= 100


def test_shaped_inventory_is_injectable() -> None:
    two = Inventory(cpu_count=16, ram_total=64 << 30, ram_available=60 << 30,
                    gpus=(Gpu(0, "A", 24 << 30, 24 << 30, 0), Gpu(1, "B", 24 << 30, 20 << 30, 4 << 30)))
    assert sum(g.free for g in two.gpus) == 44 << 30


GiB = 1 << 30
from ohmygpu.daemon.placement import place_on_device  # noqa: E402


def gpu(i: int, total_gb: int, free_gb: float) -> Gpu:
    return Gpu(i, f"gpu{i}", total_gb * GiB, int(free_gb * GiB), total_gb * GiB - int(free_gb * GiB))


def test_cpu_only_machine_places_on_cpu() -> None:
    assert place_on_device(4 * GiB, 32, ()).device == "cpu"


def test_whole_model_goes_to_the_roomiest_gpu() -> None:
    two = (gpu(0, 24, 10), gpu(1, 24, 20))
    p = place_on_device(8 * GiB, 32, two)
    assert p.device == "cuda:1" and p.gpu_layers == -1 and p.vram == 8 * GiB


def test_partial_offload_when_it_does_not_fit() -> None:
    small = (gpu(0, 8, 8),)
    p = place_on_device(16 * GiB, 32, small, reserve=0)
    assert p.device == "cuda:0" and 0 < p.gpu_layers < 32 and p.vram <= 8 * GiB
    assert place_on_device(16 * GiB, 32, small, allow_partial=False).device == "cpu"


def test_budget_reserve_and_what_we_already_use() -> None:
    one = (gpu(0, 24, 24),)
    assert place_on_device(6 * GiB, 32, one, vram_budget=8 * GiB, used_by_us={0: 4 * GiB}).gpu_layers != -1
    assert place_on_device(6 * GiB, 32, one, vram_budget=8 * GiB).gpu_layers == -1
    assert place_on_device(int(23.8 * GiB), 32, one, reserve=1 * GiB).gpu_layers != -1


def test_requested_device() -> None:
    two = (gpu(0, 24, 20), gpu(1, 24, 2))
    assert place_on_device(4 * GiB, 32, two, requested="cpu").device == "cpu"
    p = place_on_device(1 * GiB, 32, two, requested="cuda:1", reserve=0)
    assert p.device == "cuda:1" and p.gpu_layers == -1
    with pytest.raises(NeverFits, match="cuda:7 does not exist"):
        place_on_device(GiB, 32, two, requested="cuda:7")
    with pytest.raises(NeverFits, match="cuda:1 has"):
        place_on_device(30 * GiB, 32, (gpu(0, 24, 20), gpu(1, 24, 0.1)), requested="cuda:1", reserve=0)
