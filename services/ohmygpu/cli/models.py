"""`omg model ...` and `omg pull`: the model store's commands, and model-name completion."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ohmygpu.api.v1 import models_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.cli.client import EXIT_USAGE, Client, CliError
from ohmygpu.cli.format import ago as _ago
from ohmygpu.cli.format import print_json as _json
from ohmygpu.cli.format import size as _size
from ohmygpu.cli.format import table as _table
from ohmygpu.core.artifacts import model_digest
from ohmygpu.core.enums import enum_name
from ohmygpu.core.kinds import kind_name
from ohmygpu.core.settings import Settings


def cmd_model(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    if args.action == "add":
        path = Path(args.path).expanduser().absolute()
        parts = [str(Path(p).expanduser().absolute()) for p in args.parts]
        rec = client.call(client.models.AddModel,
                          models_pb2.AddModelRequest(path=str(path), name=args.name or "", parts=parts), timeout=3600)
        if args.json:
            _json(rec)
        else:
            print(f"added {rec.name} ({_size(rec.size_bytes)}, {model_digest(rec)[:19]}…)")
        return 0
    if args.action in ("list", "ls"):
        resp = client.call(client.models.ListModels, models_pb2.ListModelsRequest())
        if args.json:
            _json(resp)
            return 0
        rows = [[m.name, enum_name(assets_pb2.ModelKind, m.kind),
                 enum_name(assets_pb2.ArtifactFormat, m.format),
                 m.gguf.quantization, _size(m.size_bytes), m.revision.commit[:10] or "local",
                 _ago(m.last_used_at)] for m in resp.models]
        _table(rows, ["NAME", "KIND", "FORMAT", "QUANT", "SIZE", "REVISION", "LAST USED"])
        return 0
    if args.action == "info":
        rec = client.call(client.models.GetModel, models_pb2.GetModelRequest(name=args.name))
        if args.json:
            _json(rec)
            return 0
        g = rec.gguf
        source = (rec.ref.repo if rec.ref.provider == assets_pb2.PROVIDER_HF else "uploaded"
                  if rec.ref.provider == assets_pb2.PROVIDER_UPLOAD else f"local ({rec.ref.repo})")
        fmt = enum_name(assets_pb2.ArtifactFormat, rec.format)
        print(f"{rec.name}\n  source        {source} {rec.revision.commit}\n"
              f"  kind          {kind_name(rec.kind)}\n  format        {fmt}")
        if rec.HasField("gguf"):
            print(f"  architecture  {g.architecture}\n  parameters    {g.parameter_count:,}\n"
                  f"  quantization  {g.quantization}\n  context       {g.context_length}")
        if rec.HasField("diffusion"):
            d = rec.diffusion
            parts = [n for n, present in (("denoiser", d.has_denoiser), ("VAE", d.has_vae),
                                          ("text encoder", d.has_text_encoder)) if present]
            missing = [n for n, present in (("denoiser", d.has_denoiser), ("VAE", d.has_vae),
                                            ("text encoder", d.has_text_encoder)) if not present]
            print(f"  family        {d.family} (native {d.native_size}x{d.native_size})\n"
                  f"  parameters    {d.parameters:,} ({', '.join(d.dtypes)})\n"
                  f"  holds         {', '.join(parts) or 'nothing known'}"
                  + (f"; lacks {', '.join(missing)}" if missing else ""))
        if rec.HasField("transformers"):
            t = rec.transformers
            pooling = (f"\n  pooling       {t.pooling}" + (", normalized" if t.normalize else "")
                       + f" ({t.embedding_dimensions} dimensions)") if t.pooling else ""
            print(f"  architecture  {t.architecture} ({t.model_type})\n  parameters    {t.parameter_count:,} "
                  f"({t.dtype})\n  context       {t.context_length}{pooling}")
        print(f"  size          {_size(rec.size_bytes)}")
        # The daemon's estimate: its context length and slots, not this client's settings.
        est = client.call(client.models.EstimateModel, models_pb2.EstimateModelRequest(name=rec.name))
        at = f" at {est.context_length} tokens" if est.context_length else ""
        print(f"  memory        ~{_size(est.total_bytes)}{at} (weights {_size(est.weights_bytes)}, "
              f"KV cache {_size(est.kv_cache_bytes)}, overhead {_size(est.overhead_bytes)})")
        for a in rec.artifacts:
            role = f" ({a.role})" if a.role else ""  # the part of a multi-file diffusion model
            print(f"  file          {a.filename}{role}  {a.sha256}")
        if rec.HasField("derived"):
            _print_derived(rec.derived)
        template = rec.derived.template or g.chat_template or rec.transformers.chat_template
        if template:
            print("  chat template " + template[:200].replace("\n", "\\n") + ("…" if len(template) > 200 else ""))
        return 0
    if args.action == "rm":
        resp = client.call(client.models.DeleteModel, models_pb2.DeleteModelRequest(name=args.name), timeout=120)
        print(f"removed {args.name} (freed {_size(resp.freed_bytes)})")
        return 0
    if args.action == "gc":
        gc = client.call(client.models.GarbageCollect, models_pb2.GarbageCollectRequest(dry_run=args.dry_run),
                         timeout=600)
        if args.json:
            _json(gc)
            return 0
        for path in gc.removed:
            print(("would remove " if args.dry_run else "removed ") + path)
        print(f"{'would free' if args.dry_run else 'freed'} {_size(gc.freed_bytes)}")
        return 0
    if args.action == "du":
        du = client.call(client.models.DiskUsage, models_pb2.DiskUsageRequest())
        if args.json:
            _json(du)
            return 0
        _table([[m.name, _size(m.size_bytes), _size(m.unique_bytes)] for m in du.models], ["NAME", "SIZE", "UNIQUE"])
        print(f"total distinct content: {_size(du.total_bytes)}")
        return 0
    if args.action == "verify":
        resp = client.call(client.models.VerifyModels, models_pb2.VerifyModelsRequest(name=args.name or ""),
                           timeout=3600)
        if args.json:
            _json(resp)
        bad = [c for c in resp.checks if not c.ok]
        if not args.json:
            for c in resp.checks:
                print(f"{'ok     ' if c.ok else 'CORRUPT'}  {c.model}  {c.filename}" + (f"  ({c.problem})" if c.problem else ""))
        return 1 if bad else 0
    if args.action == "pull":
        return cmd_pull(args, settings)
    raise CliError(f"unknown model action {args.action}", EXIT_USAGE)


def _print_derived(d: assets_pb2.DerivedModel) -> None:
    """What a model made by create (Ollama's /api/create) adds to its files."""
    def short(text: str) -> str:
        return text[:200].replace("\n", "\\n") + ("…" if len(text) > 200 else "")

    print(f"  made from     {d.base or 'an uploaded file'}")
    if d.system:
        print(f"  system        {short(d.system)}")
    for field, value in d.params.ListFields():
        shown = ", ".join(repr(v) for v in value) if field.name == "stop" else \
            f"{value:g}" if isinstance(value, float) else value
        print(f"  default       {field.name} = {shown}")
    if d.context_length:
        print(f"  context       {d.context_length} (its own)")
    for m in d.messages:
        print(f"  message       {m.role}: {short(m.content)}")
    if d.license:
        print(f"  license       {short(d.license[0])}")


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.cli.pull import run_pull

    request = models_pb2.InstallModelRequest(source=args.source, name=args.name or "", include=args.include or [],
                                             exclude=args.exclude or [], max_rate=args.max_rate or 0,
                                             node=getattr(args, "node", None) or "", parts=args.parts or [])
    return run_pull(Client(settings), request, quiet=args.quiet)


def complete_models(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Model names from the daemon, for shell completion (nothing when it does not answer)."""
    try:
        settings = Settings.load(overrides={"home": parsed_args.home, "grpc_addr": parsed_args.grpc_addr,
                                            "token": parsed_args.token, "host": parsed_args.host})
        client = Client(settings)
        resp = client.models.ListModels(models_pb2.ListModelsRequest(), timeout=1, metadata=client.metadata)
        return [m.name for m in resp.models if m.name.startswith(prefix)]
    except Exception:  # completion must never print an error into the shell
        return []


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `model` subcommands and `pull`."""
    m = sub.add_parser("model", help="manage the model store")
    msub = m.add_subparsers(dest="action", required=True)
    add = msub.add_parser("add", help="register a local GGUF file or model directory (faster-whisper) in place")
    add.add_argument("path")
    add.add_argument("--name", help="name to use (default: from the file name)")
    add.add_argument("--part", dest="parts", action="append", default=[], metavar="FILE",
                     help="a further file of a diffusion model published as several (FLUX, SD3, Wan): its VAE "
                          "or a text encoder, told from its tensors; PATH is then the diffusion model (repeatable)")
    for name in ("list", "ls"):
        msub.add_parser(name, help="list models")
    info = msub.add_parser("info", help="show a model's details")
    info.add_argument("name").completer = complete_models  # type: ignore[attr-defined]
    rm = msub.add_parser("rm", help="remove a model and the bytes nothing else uses")
    rm.add_argument("name").completer = complete_models  # type: ignore[attr-defined]
    gc = msub.add_parser("gc", help="delete unreferenced blobs and stale partial downloads")
    gc.add_argument("--dry-run", dest="dry_run", action="store_true", help="show what would go, delete nothing")
    msub.add_parser("du", help="disk use per model")
    ver = msub.add_parser("verify", help="re-hash files and report corruption")
    ver.add_argument("name", nargs="?")
    mp = msub.add_parser("pull", help="same as `omg pull`")
    mp.add_argument("source")
    mp.add_argument("--name")
    mp.add_argument("--include", action="append")
    mp.add_argument("--exclude", action="append")
    mp.add_argument("--max-rate", dest="max_rate", type=int)
    mp.add_argument("--part", dest="parts", action="append")
    mp.add_argument("--quiet", action="store_true")
    for action in msub.choices.values():
        action.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_model)

    for name in ("pull",):
        pl = sub.add_parser(name, help="pull a model from the Hugging Face hub (org/repo[@rev] or hf.co/org/repo:QUANT)")
        pl.add_argument("source")
        pl.add_argument("--name", help="name to register it under (default: the source)")
        pl.add_argument("--include", action="append", help="glob of files to pull (repeatable)")
        pl.add_argument("--exclude", action="append", help="glob of files to skip (repeatable)")
        pl.add_argument("--max-rate", dest="max_rate", type=int, help="bandwidth limit, bytes/s")
        pl.add_argument("--part", dest="parts", action="append", metavar="SOURCE",
                        help="a further file of a diffusion model published as several (its VAE or a text encoder), "
                             "from any repo: org/repo/FILE, org/repo:QUANT or a file's hub link (repeatable)")
        pl.add_argument("--quiet", action="store_true", help="no progress bars")
        pl.add_argument("--node", help="place the files on this node too (it pulls them, or the daemon sends them)")
        pl.set_defaults(func=cmd_pull)
