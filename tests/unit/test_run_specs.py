"""Every RunSpec field is honoured or refused (daemon/specs.py, placement's per-run VRAM cap)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.placement import place_on_device
from ohmygpu.daemon.specs import check_run, load_key, spec_for, with_run_defaults
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.registry import runtime_for


def _record(commit: str = "", requested: str = "") -> assets_pb2.InstallRecord:
    return assets_pb2.InstallRecord(name="m", kind=assets_pb2.MODEL_KIND_LLM, format=assets_pb2.ARTIFACT_FORMAT_GGUF,
                                    revision=assets_pb2.Revision(commit=commit, requested=requested))


def _run(**kw: object) -> run_spec_pb2.RunSpec:
    return run_spec_pb2.RunSpec(model=assets_pb2.ModelRef(repo="m"), **kw)  # type: ignore[arg-type]


def test_runtime_revision_and_network_that_cannot_be_given_are_refused() -> None:
    rec = _record(commit="a" * 40, requested="main")
    rt = runtime_for(rec)
    check_run(_run(runtime=rt.name, revision=assets_pb2.Revision(commit="a" * 40, requested="main")), rec, rt)
    cases = {
        "runtime": _run(runtime="exllama"),
        "revision": _run(revision=assets_pb2.Revision(commit="b" * 40)),
        "revision ": _run(revision=assets_pb2.Revision(requested="v2.0")),
        "network": _run(network=run_spec_pb2.Network(bind="0.0.0.0", port=8080)),
    }
    for param, run in cases.items():
        with pytest.raises(InvalidArgument) as info:
            check_run(run, rec, rt)
        assert info.value.param == param.strip()
    with pytest.raises(InvalidArgument, match="a local file"):
        check_run(_run(revision=assets_pb2.Revision(commit="c" * 40)), _record(), rt)


def test_params_extensions_and_vram_budget_travel_with_the_spec() -> None:
    settings = Settings.load(overrides={"home": "/nonexistent-omg-home"})
    rec = _record()
    run = _run(params=run_spec_pb2.SamplingParams(max_tokens=3, stop=["END"]),
               resources=run_spec_pb2.Resources(vram_budget_mb=2048))
    run.extensions["flash_attn"].bool_value = True
    run.extensions["template_timeout_s"].number_value = 999  # a run cannot lift the daemon's bound
    spec = spec_for(settings, rec, runtime_for(rec), run)
    assert spec.params.max_tokens == 3 and list(spec.params.stop) == ["END"]
    assert spec.extensions["flash_attn"].bool_value is True
    assert spec.extensions["template_timeout_s"].number_value == settings.template_timeout_s
    assert spec.resources.vram_budget_mb == 2048
    # Changing an extension or the VRAM budget is a reload, as other load options are.
    other = _run(resources=run_spec_pb2.Resources(vram_budget_mb=2048))
    assert load_key(spec_for(settings, rec, runtime_for(rec), other)) != load_key(spec)


def test_run_defaults_fill_only_what_a_request_leaves_unset() -> None:
    defaults = run_spec_pb2.SamplingParams(max_tokens=3, temperature=0.0, stop=["END"])
    out = with_run_defaults(run_spec_pb2.SamplingParams(max_tokens=7), defaults)
    assert out.max_tokens == 7 and out.HasField("temperature") and out.temperature == 0.0
    assert list(out.stop) == ["END"]
    out = with_run_defaults(run_spec_pb2.SamplingParams(stop=["x"]), defaults)
    assert list(out.stop) == ["x"] and out.max_tokens == 3
    assert not with_run_defaults(run_spec_pb2.SamplingParams(), run_spec_pb2.SamplingParams()).ListFields()


def test_a_runs_vram_budget_caps_its_model_on_the_gpu() -> None:
    gpu = SimpleNamespace(index=0, free=80 << 30, total=80 << 30)
    need = 10 << 30
    assert place_on_device(need, 31, (gpu,)).gpu_layers == -1  # the whole model fits
    capped = place_on_device(need, 31, (gpu,), model_cap=4 << 30)
    assert capped.device == "cuda:0" and 0 < capped.gpu_layers < 31 and capped.vram <= 4 << 30
