"""`omg train MODEL --data file.jsonl --out NAME`: start a training job (a LoRA adapter) on the
daemon and show its steps and loss until it ends, like `omg pull`; Ctrl-C (or --detach) leaves
the job running in the daemon (`omg job list`, `omg job cancel ID`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ohmygpu.api.v1 import jobs_pb2, train_pb2, train_pb2_grpc
from ohmygpu.cli.client import EXIT_USAGE, Client, CliError
from ohmygpu.cli.models import complete_models
from ohmygpu.core.enums import enum_name
from ohmygpu.core.settings import Settings
from ohmygpu.runtime.v1 import runtime_pb2


def add_parsers(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a LoRA adapter on a Hugging Face format model: "
                                     "omg train MODEL --data file.jsonl --out NAME")
    t.add_argument("model", help="the Hugging Face format (safetensors) model to train on").completer = complete_models  # type: ignore[attr-defined]
    t.add_argument("--data", required=True, help="JSONL: one {messages}, {prompt, completion} or {text} per line")
    t.add_argument("--out", required=True, help="the name of the adapter model it makes")
    t.add_argument("--base-gguf", dest="base_gguf",
                   help="also serve the adapter on this GGUF model (the same weights as MODEL) with llama.cpp")
    t.add_argument("--steps", type=int, help="optimizer steps (default: the epochs' worth)")
    t.add_argument("--epochs", type=int, help="passes over the data (default 3)")
    t.add_argument("--lr", type=float, help="learning rate (default 2e-4)")
    t.add_argument("--rank", type=int, help="LoRA rank (default 8)")
    t.add_argument("--alpha", type=float, help="LoRA alpha (default twice the rank)")
    t.add_argument("--batch-size", dest="batch_size", type=int, help="examples per step (default 4)")
    t.add_argument("--max-length", dest="max_length", type=int, help="tokens per example (default 512)")
    t.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, help="steps between checkpoints (default 10)")
    t.add_argument("--seed", type=int)
    t.add_argument("--target", action="append", help="a module to adapt (repeatable; default: the attention projections)")
    t.add_argument("--replace", action="store_true", help="replace an adapter of that name made by an earlier job")
    t.add_argument("--detach", "-d", action="store_true", help="print the job id and return at once")
    t.set_defaults(func=cmd_train)


def request_of(args: argparse.Namespace) -> train_pb2.CreateTrainJobRequest:
    try:
        data = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read --data {args.data}: {getattr(e, 'strerror', None) or e}", EXIT_USAGE) from None
    o = runtime_pb2.TrainOptions(max_steps=args.steps or 0, epochs=args.epochs or 0, batch_size=args.batch_size or 0,
                                 lora_rank=args.rank or 0, max_length=args.max_length or 0,
                                 checkpoint_every=args.checkpoint_every or 0, target_modules=args.target or [])
    if args.lr is not None:
        o.learning_rate = args.lr
    if args.alpha is not None:
        o.lora_alpha = args.alpha
    if args.seed is not None:
        o.seed = args.seed
    return train_pb2.CreateTrainJobRequest(model=args.model, data=data, output=args.out, options=o,
                                           replace=args.replace, gguf_base=args.base_gguf or "")


def line(job: jobs_pb2.Job) -> str:
    """A training job's progress in one line ("step 3/10  loss 2.1432  (from 3.7012)")."""
    t = job.train
    text = f"step {t.step}/{t.total_steps or '?'}"
    if t.loss:
        text += f"  loss {t.loss:.4f}"
        if t.first_loss and t.first_loss != t.loss:
            text += f" (from {t.first_loss:.4f})"
    if t.resumed_from_step:
        text += f"  resumed at {t.resumed_from_step}"
    return text


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    client = Client(settings)
    stub = train_pb2_grpc.TrainServiceStub(client.channel)
    job: jobs_pb2.Job = client.call(stub.CreateTrainJob, request_of(args), timeout=60)
    if args.detach:
        print(job.id)
        return 0
    print(f"{job.id}: training {args.out} on {args.model}", file=sys.stderr)
    call = client.stream(client.jobs.WatchJob, jobs_pb2.WatchJobRequest(id=job.id))
    last, shown = job, ""
    tty = sys.stderr.isatty()
    try:
        for last in client.iterate(call):
            now = line(last)
            if now != shown and last.train.step:
                shown = now
                print(("\r" + now.ljust(60)) if tty else now, end="" if tty else "\n", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        call.cancel()
        print(f"\nthe training goes on in the daemon: `omg job cancel {job.id}` stops it", file=sys.stderr)
        return 130
    if tty:
        print(file=sys.stderr)
    if last.state == jobs_pb2.JOB_STATE_DONE:
        print(f"trained {last.model}: {last.train.step} steps, loss {last.train.first_loss:.4f} -> {last.train.loss:.4f}")
        return 0
    raise CliError(f"training {job.id} {enum_name(jobs_pb2.JobState, last.state)}: {last.error or 'no reason given'}")
