"""`omg`: the command line. Every command but `serve` is a gRPC client of the daemon."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any

from google.protobuf import json_format
from ohmygpu.api.v1 import jobs_pb2, models_pb2, system_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.cli import gen, models, node, say, speech, train, ui
from ohmygpu.cli.client import EXIT_USAGE, Client, CliError
from ohmygpu.cli.format import print_json as _json
from ohmygpu.cli.format import size as _size
from ohmygpu.cli.format import table as _table
from ohmygpu.cli.models import complete_models
from ohmygpu.core.enums import enum_name
from ohmygpu.core.errors import OmgError
from ohmygpu.core.settings import Settings
from ohmygpu.core.version import __version__
from ohmygpu.run.v1 import run_spec_pb2

# -- commands ---------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "status":
        client = Client(settings)
        st: system_pb2.GetStatusResponse = client.call(client.system.GetStatus, system_pb2.GetStatusRequest())
        if args.json:
            _json(st)
            return 0
        print(f"omg {st.version} running, pid {st.pid}")
        print(f"  HTTP  http://{st.http_addr}\n  gRPC  {st.grpc_addr}\n  home  {st.home}")
        print(f"  models {st.model_count}, loaded {len(st.loaded)}: "
              + (", ".join(m.name for m in st.loaded) or "none"))
        return 0
    if args.action == "stop":
        client = Client(settings)
        st = client.call(client.system.GetStatus, system_pb2.GetStatusRequest())
        client.call(client.system.Shutdown, system_pb2.ShutdownRequest())
        for _ in range(0 if settings.host else 100):  # a local daemon: wait until it is gone
            try:
                os.kill(st.pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                break
            time.sleep(0.1)
        print(f"omg daemon (pid {st.pid}) stopped")
        return 0
    from ohmygpu.daemon.server import serve

    return serve(settings)


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    if args.action == "cancel":
        job = client.call(client.jobs.CancelJob, jobs_pb2.CancelJobRequest(id=args.id))
        print(f"{job.id}: {jobs_pb2.JobState.Name(job.state)}")
        return 0
    if args.action == "show":
        _json(client.call(client.jobs.GetJob, jobs_pb2.GetJobRequest(id=args.id)))
        return 0
    resp = client.call(client.jobs.ListJobs, jobs_pb2.ListJobsRequest())
    if args.json:
        _json(resp)
        return 0
    _table([[j.id, j.kind, j.model, enum_name(jobs_pb2.JobState, j.state),
             train.line(j) if j.kind == "train" else f"{j.completed_bytes / 1e6:.1f}/{j.total_bytes / 1e6:.1f} MB",
             j.error[:60]] for j in resp.jobs],
           ["ID", "KIND", "MODEL", "STATE", "PROGRESS", "ERROR"])
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.api.v1 import runs_pb2, runs_pb2_grpc

    client = Client(settings)
    stub = runs_pb2_grpc.RunServiceStub(client.channel)
    target = args.target
    if target in ("ls", "list"):
        resp = client.call(stub.ListRuns, runs_pb2.ListRunsRequest())
        if args.json:
            _json(resp)
            return 0
        _table([[r.id, r.model, enum_name(runs_pb2.RunState, r.state), r.node or "-",
                 str(r.pid or ""), str(r.spec.resources.context_length or ""), r.error[:50]] for r in resp.runs],
               ["ID", "MODEL", "STATE", "NODE", "PID", "CONTEXT", "ERROR"])
        return 0
    if target in ("stop", "logs"):
        if not args.extra:
            raise CliError(f"usage: omg run {target} RUN_ID", EXIT_USAGE)
        if target == "stop":
            run = client.call(stub.StopRun, runs_pb2.StopRunRequest(id=args.extra), timeout=60)
            print(f"{run.id}: {enum_name(runs_pb2.RunState, run.state)}")
            return 0
        call = client.stream(stub.StreamRunLogs, runs_pb2.StreamRunLogsRequest(id=args.extra, follow=args.follow))
        try:
            for line in client.iterate(call):
                print(line.line, flush=True)
        except KeyboardInterrupt:
            call.cancel()
        return 0
    spec = run_spec_pb2.RunSpec(model=assets_pb2.ModelRef(repo=target))
    if args.ctx:
        spec.resources.context_length = args.ctx
    if args.threads:
        spec.resources.cpu_threads = args.threads
    if args.parallel:
        spec.resources.max_concurrency = args.parallel
    if args.gpu_layers is not None:
        spec.resources.gpu_layers = args.gpu_layers
    if args.node:
        spec.resources.node = args.node
    for label in args.label or []:
        key, sep, value = label.partition("=")
        if not sep:
            raise CliError(f"--label {label!r}: write key=value", EXIT_USAGE)
        spec.resources.node_labels[key] = value
    run = client.call(stub.CreateRun, runs_pb2.CreateRunRequest(spec=spec), timeout=settings.worker_start_timeout_s + 10)
    if args.json:
        _json(run)
    else:
        where = f" on node {run.node}" if run.node and run.node != "local" else ""
        print(f"{run.id}: {run.model} pinned{where} (pid {run.pid}); stop with `omg run stop {run.id}`")
    return 0


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.api.v1 import events_pb2, events_pb2_grpc
    from ohmygpu.events.v1 import events_pb2 as ev

    client = Client(settings)
    stub = events_pb2_grpc.EventServiceStub(client.channel)
    call = client.stream(stub.StreamEvents, events_pb2.StreamEventsRequest())
    try:
        for e in client.iterate(call):
            if args.json:
                print(json.dumps(json_format.MessageToDict(e)), flush=True)
                continue
            when = e.time.ToDatetime().strftime("%H:%M:%S")
            kind = enum_name(ev.EventKind, e.kind)
            progress = f"  {e.progress.completed}/{e.progress.total} {e.progress.unit}" if e.progress.total else ""
            print(f"{when}  {kind:<8} {e.subject:<28} {e.message}{progress}", flush=True)
    except KeyboardInterrupt:
        call.cancel()
    return 0


def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.cli.chat import run_chat

    params = run_spec_pb2.SamplingParams()
    for key in ("temperature", "top_p", "top_k", "seed", "max_tokens"):
        value = getattr(args, key)
        if value is not None:
            setattr(params, key, value)
    client = Client(settings)
    prompt = " ".join(args.prompt) if args.prompt else None
    return run_chat(client, args.model, prompt, params, args.system, settings.home_path / "history")


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    resp = client.call(client.system.ListLoaded, system_pb2.ListLoadedRequest())
    if args.json:
        _json(resp)
        return 0
    def until(m: Any) -> str:
        if not m.HasField("expires_at"):
            return "forever"
        left = m.expires_at.seconds - time.time()
        return "now" if left <= 0 else f"{int(left // 60)}m{int(left % 60):02d}s"

    modes = {run_spec_pb2.MODE_EMBEDDINGS: "embeddings", run_spec_pb2.MODE_TRANSCRIPTION: "transcription"}
    _table([[m.name, modes.get(m.mode, "chat"), m.runtime, m.node or "local", str(m.pid), m.device,
             _size(m.memory_bytes), str(m.in_flight), until(m)]
            for m in resp.models], ["NAME", "MODE", "RUNTIME", "NODE", "PID", "DEVICE", "MEMORY", "IN FLIGHT", "UNTIL"])
    return 0


def cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    print(f"omg client {__version__}")
    client = Client(settings)
    try:
        v = client.call(client.system.GetVersion, system_pb2.GetVersionRequest(), timeout=3)
        print(f"daemon {v.version} at {settings.grpc_addr}")
    except CliError as e:
        print(f"daemon: {e.message}")
    return 0


def cmd_top(args: argparse.Namespace, settings: Settings) -> int:
    from ohmygpu.cli.top import run_top

    return run_top(Client(settings), args.interval)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    resp = client.call(client.models.SearchModels,
                       models_pb2.SearchModelsRequest(query=" ".join(args.query), limit=args.limit), timeout=60)
    if args.json:
        _json(resp)
        return 0
    if not resp.hits:
        print("nothing found")
        return 1
    _table([[h.repo, f"{h.downloads:,}", f"{h.likes:,}", h.pipeline_tag or "-",
             ", ".join(h.quantizations) or "-"] for h in resp.hits],
           ["REPO", "DOWNLOADS", "LIKES", "TASK", "GGUF QUANTIZATIONS"])
    return 0


def cmd_completion(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import argcomplete
    except ImportError:
        raise CliError("shell completion needs argcomplete: pip install argcomplete") from None
    print(argcomplete.shellcode(["omg"], shell=args.shell))
    return 0


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    try:
        import mcp  # noqa: F401
        from ohmygpu.cli.mcp_server import run_mcp
    except ImportError:
        raise CliError("omg mcp needs the MCP SDK: pip install 'ohmygpu[mcp]'") from None
    if args.tools is not None:
        settings = dataclasses.replace(settings, mcp_tools=args.tools)
    return run_mcp(settings)


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    rows = settings.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _table([[r["env"], r["value"], r["source"], r["help"]] for r in rows],
           ["VARIABLE", "VALUE", "SOURCE", "MEANING"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="omg", description="ohmygpu: one daemon for local AI models")
    p.add_argument("--home", help="state directory (OMG_HOME)")
    p.add_argument("--grpc-addr", help="daemon gRPC address (OMG_GRPC_ADDR)")
    p.add_argument("--host", help="daemon to talk to: host[:port] or grpcs://host[:port] (OMG_HOST)")
    p.add_argument("--token", help="daemon token (OMG_TOKEN)")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("serve", help="run the daemon in the foreground, or status/stop it")
    s.add_argument("action", nargs="?", choices=["status", "stop"], help="query or stop a running daemon")
    s.add_argument("--http-addr", help="HTTP listen address (OMG_HTTP_ADDR)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_serve)

    models.add_parsers(sub)
    c = sub.add_parser("chat", help="chat with a model (interactive without a prompt)")
    c.add_argument("model").completer = complete_models  # type: ignore[attr-defined]
    c.add_argument("prompt", nargs="*", help="one-shot prompt; omit for an interactive session")
    c.add_argument("--system", help="system message")
    c.add_argument("--temperature", type=float)
    c.add_argument("--top-p", dest="top_p", type=float)
    c.add_argument("--top-k", dest="top_k", type=int)
    c.add_argument("--seed", type=int)
    c.add_argument("--max-tokens", dest="max_tokens", type=int)
    c.set_defaults(func=cmd_chat)

    j = sub.add_parser("job", help="pull and training jobs: list, show ID, cancel ID")
    j.add_argument("action", nargs="?", default="list", choices=["list", "show", "cancel"])
    j.add_argument("id", nargs="?")
    j.add_argument("--json", action="store_true")
    j.set_defaults(func=cmd_job)

    rn = sub.add_parser("run", help="pin a model with load options (omg run MODEL), or: run ls | stop ID | logs ID")
    rn.add_argument("target", help="a model to run, or ls / stop / logs")
    rn.add_argument("extra", nargs="?", help="the run id, for stop and logs")
    rn.add_argument("--ctx", type=int, help="context length")
    rn.add_argument("--threads", type=int, help="CPU threads")
    rn.add_argument("--parallel", type=int, help="requests served at once (sequences; default OMG_NUM_PARALLEL)")
    rn.add_argument("--gpu-layers", dest="gpu_layers", type=int, help="layers on the GPU (-1: all)")
    rn.add_argument("--node", help="the node to run on (`omg node ls`; local: this machine)")
    rn.add_argument("--label", action="append", help="run on a node with this label k=v (repeatable)")
    rn.add_argument("-f", "--follow", action="store_true", help="with logs: keep streaming")
    rn.add_argument("--json", action="store_true")
    rn.set_defaults(func=cmd_run)
    evs = sub.add_parser("events", help="print the daemon's events live (loads, unloads, pulls, crashes)")
    evs.add_argument("--json", action="store_true")
    evs.set_defaults(func=cmd_events)

    speech.add_parsers(sub)
    say.add_parsers(sub)
    gen.add_parsers(sub)
    train.add_parsers(sub)
    node.add_parsers(sub)
    ui.add_parsers(sub)
    se = sub.add_parser("search", help="search the Hugging Face hub: downloads, likes, GGUF quantizations")
    se.add_argument("query", nargs="+")
    se.add_argument("--limit", type=int, default=20)
    se.add_argument("--json", action="store_true", help="machine-readable output")
    se.set_defaults(func=cmd_search)
    tp = sub.add_parser("top", help="full-screen live view: devices, models, pulls, events (keys act on rows)")
    tp.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    tp.set_defaults(func=cmd_top)
    st = sub.add_parser("status", help="the daemon's state (same as serve status)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=lambda a, s: cmd_serve(argparse.Namespace(action="status", json=a.json), s))
    lg = sub.add_parser("logs", help="a run's worker log (same as run logs ID)")
    lg.add_argument("run")
    lg.add_argument("-f", "--follow", action="store_true", help="keep streaming")
    lg.set_defaults(func=lambda a, s: cmd_run(argparse.Namespace(target="logs", extra=a.run, follow=a.follow,
                                                                   json=False, ctx=None, threads=None,
                                                                   gpu_layers=None, parallel=None, node=None,
                                                                   label=None), s))
    comp = sub.add_parser("completion", help="print the shell completion script: omg completion bash|zsh|fish")
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    comp.set_defaults(func=cmd_completion)
    mc = sub.add_parser("mcp", help="serve the daemon's models as MCP tools on stdio (Claude Desktop, ...)")
    mc.add_argument("--tools", help="comma-separated tools to offer (OMG_MCP_TOOLS; default: all)")
    mc.set_defaults(func=cmd_mcp)
    ps = sub.add_parser("ps", help="list loaded models")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_ps)
    v = sub.add_parser("version", help="client and daemon versions")
    v.set_defaults(func=cmd_version)
    cfg = sub.add_parser("config", help="every setting, its value, source and meaning")
    cfg.add_argument("--json", action="store_true")
    cfg.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        try:  # answers the shell's completion request and exits; does nothing otherwise
            import argcomplete

            argcomplete.autocomplete(parser)
        except ImportError:
            pass
    args = parser.parse_args(argv)
    if args.command is None:  # `omg` alone: the REPL
        from ohmygpu.cli.repl import Repl

        settings = Settings.load(overrides={"home": args.home, "grpc_addr": args.grpc_addr, "token": args.token,
                                            "host": args.host})
        shared = [a for flag, value in (("--home", args.home), ("--grpc-addr", args.grpc_addr),
                                         ("--token", args.token), ("--host", args.host)) if value
                  for a in (flag, value)]

        def run_command(words: list[str]) -> int:
            try:
                return main(shared + words)
            except SystemExit as e:  # argparse's usage errors must not end the REPL
                return int(e.code or 0)

        return Repl(settings, run_command).run()
    overrides = {"home": args.home, "grpc_addr": args.grpc_addr, "token": args.token, "host": args.host,
                 "http_addr": getattr(args, "http_addr", None)}
    try:
        settings = Settings.load(overrides=overrides)
        return args.func(args, settings)
    except CliError as e:
        print(f"omg: {e.message}", file=sys.stderr)
        return e.code
    except OmgError as e:
        print(f"omg: {e.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
