"""The RunSpec a worker loads with, built from the daemon's settings and a run's options."""

from __future__ import annotations

import json

from google.protobuf import json_format
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.settings import Settings
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.registry import RuntimeEntry


def spec_for(settings: Settings, record: assets_pb2.InstallRecord, runtime: RuntimeEntry,
             run: run_spec_pb2.RunSpec | None = None) -> run_spec_pb2.RunSpec:
    """The RunSpec a worker loads with: daemon defaults, overridden by a derived model's context
    window (core/derived.py), then by a run's resources; the run's sampling defaults and
    extensions travel with it. Raises InvalidArgument for a run that asks what cannot be given
    (see check_run)."""
    spec = run_spec_pb2.RunSpec(
        model=record.ref, revision=record.revision, runtime=runtime.name,
        mode=run_spec_pb2.MODE_CHAT,
        resources=run_spec_pb2.Resources(
            cpu_threads=settings.num_threads,
            context_length=settings.context_length,
            max_concurrency=max(1, settings.num_parallel)),
    )
    if record.derived.context_length:
        spec.resources.context_length = record.derived.context_length
    if run is not None:
        check_run(run, record, runtime)
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
        if res.vram_budget_mb:
            spec.resources.vram_budget_mb = res.vram_budget_mb
        spec.resources.node = res.node  # where it may run: placement's filter (daemon/scheduler.py)
        spec.resources.node_labels.update(res.node_labels)
        if run.mode:
            spec.mode = run.mode
        if run.HasField("params"):
            spec.params.CopyFrom(run.params)
        for key, value in run.extensions.items():  # runtime-specific: passed through unchanged
            spec.extensions[key].CopyFrom(value)
        spec.run_id = run.run_id
    # The daemon's own bounds come last: a run's extensions cannot lift them.
    spec.extensions["template_timeout_s"].number_value = settings.template_timeout_s
    if runtime.name == "whisper":
        spec.extensions["compute_type"].string_value = settings.whisper_compute_type
    return spec


def check_run(run: run_spec_pb2.RunSpec, record: assets_pb2.InstallRecord, runtime: RuntimeEntry) -> None:
    """Refuse what a run asks and no runtime can give, rather than ignore it: another runtime
    than the one serving the model, a revision the store does not hold, its own endpoint."""
    if run.runtime and run.runtime != runtime.name:
        raise InvalidArgument(f"model '{record.name}' is served by the {runtime.name} runtime; "
                              f"runtime '{run.runtime}' cannot serve it", param="runtime")
    asked = run.revision
    held = record.revision
    if asked.commit and asked.commit != held.commit:
        raise InvalidArgument(f"model '{record.name}' is at commit {held.commit or '(a local file)'}, not "
                              f"{asked.commit}; pull that revision under another name first", param="revision")
    if asked.requested and asked.requested not in (held.requested, held.commit):
        raise InvalidArgument(f"model '{record.name}' was pulled at revision '{held.requested or 'main'}', not "
                              f"'{asked.requested}'; pull that revision under another name first",
                              param="revision")
    if run.HasField("network") and run.network.ByteSize():
        raise InvalidArgument(f"the {runtime.name} runtime serves through the daemon, not an endpoint of "
                              "its own: leave the run's network settings empty", param="network")


def with_run_defaults(params: run_spec_pb2.SamplingParams,
                      defaults: run_spec_pb2.SamplingParams) -> run_spec_pb2.SamplingParams:
    """A request's sampling parameters, with a run's defaults for the fields it left unset."""
    out = run_spec_pb2.SamplingParams()
    out.CopyFrom(params)
    for field, value in defaults.ListFields():
        # protobuf 7 has is_repeated; older releases only the label it replaced
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            if not getattr(out, field.name):
                getattr(out, field.name).extend(value)
        elif not out.HasField(field.name):
            setattr(out, field.name, value)
    return out


def load_key(spec: run_spec_pb2.RunSpec) -> tuple[object, ...]:
    """The load options that, changed, need a reload (the device is placement's, not asked)."""
    r = spec.resources
    extensions = json.dumps({k: json_format.MessageToDict(v) for k, v in spec.extensions.items()},
                            sort_keys=True)
    return (spec.mode, r.context_length, r.cpu_threads, r.max_concurrency,
            r.gpu_layers if r.HasField("gpu_layers") else None, r.vram_budget_mb, extensions)
