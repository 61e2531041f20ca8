"""Deciding whether a model fits, and what to unload so it does. Pure: it sees numbers, not
processes, so it is tested on shaped machines."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from ohmygpu.core.errors import OmgError, Unavailable


class NeverFits(OmgError):
    """The model needs more memory than the budget, even with everything else unloaded."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 507
    openai_type = "server_error"


@dataclass(frozen=True)
class Resident:
    """A loaded model as placement sees it."""

    name: Hashable  # a worker key (see daemon/pool.py); printed in messages
    memory: int  # bytes, measured
    in_flight: int
    last_used: float
    pinned: bool = False


def choose_evictions(name: Hashable, need: int, loaded: list[Resident], *, budget: int,
                     max_loaded: int) -> list[Hashable]:
    """Names to unload, least recently used first, so `name` (needing `need` bytes) fits in
    `budget` and under `max_loaded`. Never a busy or pinned model.

    Raises NeverFits when `need` exceeds `budget` by itself, Unavailable when it would fit but
    the models in the way are busy or pinned (try again later).
    """
    if need > budget:
        raise NeverFits(f"model '{name}' needs about {need / 2**20:.0f} MiB but the memory budget is "
                        f"{budget / 2**20:.0f} MiB (OMG_RAM_BUDGET_MB); use a smaller quantization or "
                        "context, or raise the budget")
    others = [r for r in loaded if r.name != name]
    used = sum(r.memory for r in others)
    count = len(others)
    evict: list[Hashable] = []
    for r in sorted((r for r in others if r.in_flight == 0 and not r.pinned), key=lambda r: r.last_used):
        if used + need <= budget and count < max_loaded:
            break
        evict.append(r.name)
        used -= r.memory
        count -= 1
    if used + need > budget or count >= max_loaded:
        raise Unavailable(f"model '{name}' needs {need / 2**20:.0f} MiB; loaded models that are busy or pinned "
                          f"use {used / 2**20:.0f} of {budget / 2**20:.0f} MiB; try again shortly")
    return evict


@dataclass(frozen=True)
class DevicePlacement:
    """Where a model runs: a device and how many of its layers go to the GPU."""

    device: str  # "cpu" or "cuda:N"
    gpu_layers: int  # -1: all, 0: none, k: the first k layers (partial offload)
    vram: int  # bytes expected on the GPU


def place_on_device(need: int, layers: int, gpus: tuple, *, requested: str = "", vram_budget: int = 0,
                    reserve: int = 512 << 20, used_by_us: dict[int, int] | None = None,
                    allow_partial: bool = True, model_cap: int = 0) -> DevicePlacement:
    """Pick a GPU that holds the whole model (the one with the most room), else the first `k`
    layers on the roomiest GPU when partial offload is allowed, else the CPU.

    `need` is the estimated total bytes, `layers` the model's block count, `gpus` the
    inventory's GPUs. `vram_budget` (0: none) caps what our models may use per GPU, `model_cap`
    (0: none; a run's resources.vram_budget_mb) what this one may, `reserve` is kept free for others. `requested` "cpu" or "cuda:N" restricts the choice; raises
    NeverFits when a requested GPU cannot take even one layer.
    """
    used_by_us = used_by_us or {}
    if requested == "cpu" or not gpus:
        return DevicePlacement("cpu", 0, 0)
    candidates = list(gpus)
    if requested.startswith("cuda:"):
        index = int(requested.split(":", 1)[1]) if requested.split(":", 1)[1].isdigit() else -1
        candidates = [g for g in gpus if g.index == index]
        if not candidates:
            raise NeverFits(f"device {requested} does not exist; this machine has "
                            f"{', '.join(f'cuda:{g.index}' for g in gpus)}")

    def room(g: object) -> int:
        free = g.free - reserve  # type: ignore[attr-defined]
        if vram_budget:
            free = min(free, vram_budget - used_by_us.get(g.index, 0))  # type: ignore[attr-defined]
        if model_cap:
            free = min(free, model_cap)
        return max(0, free)

    best = max(candidates, key=room)
    if room(best) >= need:
        return DevicePlacement(f"cuda:{best.index}", -1, need)
    per_layer = need / max(1, layers + 1)  # +1: the output layer and buffers count as one more
    k = int(room(best) // per_layer) - 1
    if allow_partial and k >= 1:
        return DevicePlacement(f"cuda:{best.index}", min(k, layers), int((k + 1) * per_layer))
    if requested.startswith("cuda:"):
        raise NeverFits(f"the model needs about {need / 2**20:.0f} MiB; {requested} has "
                        f"{room(best) / 2**20:.0f} MiB free for it"
                        + ("" if allow_partial else " (partial offload is off: OMG_PARTIAL_OFFLOAD)"))
    return DevicePlacement("cpu", 0, 0)


@dataclass(frozen=True)
class NodeView:
    """A node as placement sees it: numbers, not processes (see daemon/nodes.py)."""

    index: int
    ram_budget: int  # bytes our models may use in its RAM
    residents: tuple[Resident, ...] = ()  # the models loaded on it
    gpus: tuple = ()  # its GPUs our runtime can use (an Inventory's Gpu values)
    vram_used_by_us: dict[int, int] | None = None  # GPU index -> bytes our models hold there
    holds_files: bool = True  # whether its store has the model's files (else they are sent first)


@dataclass(frozen=True)
class NodeChoice:
    """The node a model goes to, what to unload there first, and the device it is expected on
    (placed again once the evictions have freed their memory)."""

    node: int
    evict: list[Hashable]
    device: DevicePlacement


_DEVICE_RANK = {-1: 0}  # the whole model on a GPU first, then a partial offload, then the CPU


def choose_node(name: Hashable, need: int, layers: int, nodes: list[NodeView], *, max_loaded: int,
                requested: str = "", vram_budget: int = 0, reserve: int = 512 << 20,
                allow_partial: bool = True, strategy: str = "spread") -> NodeChoice:
    """The node for model `name` (needing `need` bytes, `layers` blocks): the one needing the
    fewest evictions, then the best device (whole GPU, partial, CPU), then one that holds the
    files already, then by `strategy` ("spread": the most RAM budget left after the load, "pack":
    the least; among nodes that must evict anyway, list order), then the first in the list.

    Raises, when no node can take it: Unavailable if one could once its busy or pinned models
    are done, else NeverFits (the first node's reason).
    """
    if not nodes:
        raise NeverFits(f"model '{name}' has no node to run on")
    choices: list[tuple[tuple[int, int, int, int, int], NodeChoice]] = []
    errors: list[OmgError] = []
    for node in nodes:
        try:
            evict = choose_evictions(name, need, list(node.residents), budget=node.ram_budget,
                                     max_loaded=max_loaded)
        except (NeverFits, Unavailable) as e:
            errors.append(e)
            continue
        try:  # a preview: the orchestrator places again after the evictions, and raises then
            device = place_on_device(need, layers, node.gpus, requested=requested, vram_budget=vram_budget,
                                     reserve=reserve, used_by_us=node.vram_used_by_us,
                                     allow_partial=allow_partial)
        except NeverFits:
            device = DevicePlacement("cpu", 0, 0)
        rank = 2 if device.device == "cpu" else _DEVICE_RANK.get(device.gpu_layers, 1)
        left = node.ram_budget - need - sum(r.memory for r in node.residents if r.name not in evict and r.name != name)
        # Spread or pack among nodes with room; where something must go anyway, list order.
        spread = 0 if evict else -left if strategy != "pack" else left
        choices.append(((len(evict), rank, 0 if node.holds_files else 1, spread, node.index),
                        NodeChoice(node.index, evict, device)))
    if choices:
        return min(choices, key=lambda c: c[0])[1]
    raise next((e for e in errors if isinstance(e, Unavailable)), errors[0])
