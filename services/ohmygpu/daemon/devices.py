"""What the machine has: CPU and RAM (psutil) and NVIDIA GPUs (NVML through nvidia-ml-py,
imported as pynvml). No GPU, no driver or no nvidia-ml-py is normal: the inventory is CPU only.
The scheduler receives an inventory function, so tests can shape any machine."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psutil

log = logging.getLogger("ohmygpu.devices")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total: int
    free: int
    used: int
    utilization: int = 0  # percent
    temperature: int = 0  # degrees C
    processes: tuple[int, ...] = ()  # pids using it


@dataclass(frozen=True)
class Inventory:
    cpu_count: int
    ram_total: int
    ram_available: int
    gpus: tuple[Gpu, ...] = field(default_factory=tuple)


def probe_gpus() -> tuple[Gpu, ...]:
    """GPUs through NVML; empty when there are none or NVML is missing."""
    try:
        import pynvml
    except ImportError:
        return ()
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:  # no driver: CPU only
        log.debug("NVML unavailable: %s", e)
        return ()
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            try:
                util = pynvml.nvmlDeviceGetUtilizationRates(h).gpu
            except pynvml.NVMLError:
                util = 0
            try:
                temp = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            except pynvml.NVMLError:
                temp = 0
            try:
                pids = tuple(p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h))
            except pynvml.NVMLError:
                pids = ()
            gpus.append(Gpu(index=i, name=name.decode() if isinstance(name, bytes) else str(name),
                            total=int(mem.total), free=int(mem.free), used=int(mem.used),
                            utilization=int(util), temperature=int(temp), processes=pids))
    finally:
        pynvml.nvmlShutdown()
    return tuple(gpus)


def probe() -> Inventory:
    """The machine now."""
    vm = psutil.virtual_memory()
    return Inventory(cpu_count=psutil.cpu_count() or 1, ram_total=int(vm.total),
                     ram_available=int(vm.available), gpus=probe_gpus())
