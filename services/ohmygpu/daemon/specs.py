"""The RunSpec a worker loads with, built from the daemon's settings and a run's options."""

from __future__ import annotations

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.settings import Settings
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.registry import RuntimeEntry


def spec_for(settings: Settings, record: assets_pb2.InstallRecord, runtime: RuntimeEntry,
             run: run_spec_pb2.RunSpec | None = None) -> run_spec_pb2.RunSpec:
    """The RunSpec a worker loads with: daemon defaults, overridden by a run's resources."""
    spec = run_spec_pb2.RunSpec(
        model=record.ref, revision=record.revision, runtime=runtime.name,
        mode=run_spec_pb2.MODE_CHAT,
        resources=run_spec_pb2.Resources(
            cpu_threads=settings.num_threads,
            context_length=settings.context_length,
            max_concurrency=max(1, settings.num_parallel)),
    )
    if run is not None:
        res = run.resources
        if res.context_length:
            spec.resources.context_length = res.context_length
        if res.cpu_threads:
            spec.resources.cpu_threads = res.cpu_threads
        if res.HasField("gpu_layers"):
            spec.resources.gpu_layers = res.gpu_layers
        if res.device:
            spec.resources.device = res.device
        if res.max_concurrency:
            spec.resources.max_concurrency = res.max_concurrency
        if run.mode:
            spec.mode = run.mode
        spec.run_id = run.run_id
    spec.extensions["template_timeout_s"].number_value = settings.template_timeout_s
    if runtime.name == "whisper":
        spec.extensions["compute_type"].string_value = settings.whisper_compute_type
    return spec


def load_key(spec: run_spec_pb2.RunSpec) -> tuple[object, ...]:
    """The load options that, changed, need a reload (the device is placement's, not asked)."""
    r = spec.resources
    return (spec.mode, r.context_length, r.cpu_threads, r.max_concurrency,
            r.gpu_layers if r.HasField("gpu_layers") else None)
