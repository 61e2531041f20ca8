"""`omg gen image "PROMPT" -o out.png`: image generation through the daemon's ImageService, with
a progress bar per denoising step on a terminal. `--init IMAGE` makes it image to image, `--mask` inpainting. Several
images (`-n 3`) are written as out.png, out-1.png, out-2.png."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ohmygpu.api.v1 import images_pb2_grpc
from ohmygpu.cli.client import Client, CliError
from ohmygpu.core.image_size import parse_size
from ohmygpu.runtime.v1 import runtime_pb2


def output_paths(out: Path, count: int) -> list[Path]:
    """out.png for the first image, out-1.png, out-2.png ... for the others."""
    return [out if i == 0 else out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(count)]


def request_of(args: argparse.Namespace) -> runtime_pb2.GenerateImageRequest:
    req = runtime_pb2.GenerateImageRequest(model=args.model or "", prompt=args.prompt,
                                           negative_prompt=args.negative or "", steps=args.steps or 0,
                                           sampler=args.sampler or "", count=args.n or 1)
    if args.size:
        req.width, req.height = parse_size(args.size)
    if args.seed is not None:
        req.seed = args.seed
    if args.cfg_scale is not None:
        req.cfg_scale = args.cfg_scale
    if args.init:
        req.init_image = _read(args.init)
        if args.strength is not None:
            req.strength = args.strength
    if args.mask:
        if not args.init:
            raise CliError("--mask (inpainting) needs --init, the image to repaint")
        req.mask_image = _read(args.mask)
        if args.invert_mask:
            req.mask_mode = runtime_pb2.MASK_MODE_INVERTED
        if args.mask_blur is not None:
            req.mask_blur = args.mask_blur
    return req


def _read(path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None


def run_image(client: Client, args: argparse.Namespace) -> int:
    if not args.model:
        raise CliError("--model is required: an image model from `omg model ls`")
    req = request_of(args)
    stub = images_pb2_grpc.ImageServiceStub(client.channel)
    call = client.stream(stub.GenerateImage, req)
    paths = output_paths(Path(args.output).expanduser(), req.count or 1)
    show = sys.stderr.isatty() and not args.quiet
    written: list[Path] = []
    try:
        if show:
            written = _with_progress(client, call, paths)
        else:
            for message in client.iterate(call):
                if message.HasField("image"):
                    written.append(_write(paths, message.image))
    except KeyboardInterrupt:
        call.cancel()
        return 130
    for path in written:
        print(path)
    return 0


def _write(paths: list[Path], image: runtime_pb2.GeneratedImage) -> Path:
    path = paths[min(image.index, len(paths) - 1)]
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_bytes(image.png)
        tmp.replace(path)  # never a half-written image under the name asked for
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror}") from None
    return path


def _with_progress(client: Client, call: object, paths: list[Path]) -> list[Path]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    written: list[Path] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bars:
        task = bars.add_task("loading", total=None)
        for message in client.iterate(call):
            if message.HasField("progress"):
                p = message.progress
                label = f"image {p.image + 1}/{p.images}" if p.images > 1 else "denoising"
                bars.update(task, total=p.steps, completed=p.step, description=label)
            elif message.HasField("image"):
                written.append(_write(paths, message.image))
    return written


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `gen` subcommand: `gen image`."""
    g = sub.add_parser("gen", help="generate media: omg gen image \"PROMPT\" -o out.png")
    kinds = g.add_subparsers(dest="kind", required=True)
    i = kinds.add_parser("image", help="text (or an image, --init) to image")
    i.add_argument("prompt")
    i.add_argument("--model", "-m", help="image model (see `omg model ls`)")
    i.add_argument("--output", "-o", default="out.png", help="where to write the PNG (default: out.png)")
    i.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the model's native size)")
    i.add_argument("--steps", type=int, help="denoising steps (default: the runtime's)")
    i.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    i.add_argument("--negative", help="negative prompt")
    i.add_argument("--cfg-scale", type=float, help="guidance scale")
    i.add_argument("--sampler", help="sampling method (euler_a, euler, dpm++2m, ...)")
    i.add_argument("-n", type=int, help="how many images (written as out.png, out-1.png, ...)")
    i.add_argument("--init", help="image to image: the starting image")
    i.add_argument("--strength", type=float, help="image to image: 0 keeps the image, 1 ignores it")
    i.add_argument("--mask", help="inpainting: an image whose white pixels mark what to repaint in --init")
    i.add_argument("--invert-mask", action="store_true", help="inpainting: the mask's black pixels are repainted")
    i.add_argument("--mask-blur", type=int, help="inpainting: blur the mask's edge by this many pixels")
    i.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    i.set_defaults(func=lambda a, s: run_image(Client(s), a))
