"""Deciding whether a model fits, and what to unload so it does. Pure: it sees numbers, not
processes, so it is tested on shaped machines."""

from __future__ import annotations

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

    name: str
    memory: int  # bytes, measured
    in_flight: int
    last_used: float
    pinned: bool = False


def choose_evictions(name: str, need: int, loaded: list[Resident], *, budget: int,
                     max_loaded: int) -> list[str]:
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
    evict: list[str] = []
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
