"""`omg transcribe FILE` and `omg embed MODEL TEXT...`: speech to text and embeddings through
the daemon. Transcripts print in any of the API's formats; long files show a progress bar
(seconds of audio decoded) on a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ohmygpu.api.v1 import audio_pb2
from ohmygpu.cli.client import Client, CliError
from ohmygpu.core.transcripts import FORMATS, Transcript
from ohmygpu.runtime.v1 import runtime_pb2


def run_transcribe(client: Client, args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    try:
        audio = path.read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
    req = audio_pb2.TranscribeRequest(
        model=args.model or "", audio=audio, language=args.language or "", translate=args.translate,
        initial_prompt=args.prompt or "", word_timestamps=args.word_timestamps, vad_filter=args.vad,
        beam_size=args.beam_size or 0)
    if args.temperature is not None:
        req.temperature = args.temperature
    call = client.stream(client.audio.Transcribe, req)
    transcript = Transcript(task="translate" if args.translate else "transcribe")
    show = sys.stderr.isatty() and not args.quiet
    try:
        if show:
            _with_progress(client, call, transcript)
        else:
            for message in client.iterate(call):
                transcript.add(message)
    except KeyboardInterrupt:
        call.cancel()
        return 130
    sys.stdout.write(transcript.render(args.format, words=args.word_timestamps))
    if args.format in ("json", "verbose_json"):
        sys.stdout.write("\n")
    return 0


def _with_progress(client: Client, call: object, transcript: Transcript) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("transcribing"), BarColumn(), TextColumn("{task.description}"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bars:
        task = bars.add_task("decoding audio", total=None)  # the total is known with the first message
        total = 0.0
        for message in client.iterate(call):
            segment = transcript.add(message)
            if message.HasField("info"):
                total = message.info.duration
                bars.update(task, total=total, description=f"0/{total:.0f} s")
            elif segment is not None:
                bars.update(task, completed=segment.end, description=f"{segment.end:.0f}/{total:.0f} s")


def run_embed(client: Client, args: argparse.Namespace) -> int:
    texts = list(args.text) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise CliError("nothing to embed: give TEXT arguments or lines on stdin")
    req = runtime_pb2.EmbedRequest(model=args.model, inputs=texts, normalize=not args.raw,
                                   dimensions=args.dimensions or 0)
    resp = client.call(client.embeddings.Embed, req, timeout=600)
    vectors = [[round(x, 6) for x in e.values] for e in resp.embeddings]
    if args.json:
        print(json.dumps({"model": args.model, "embeddings": vectors,
                          "prompt_tokens": resp.usage.prompt_tokens}))
    else:
        for vector in vectors:
            print(json.dumps(vector))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `transcribe` and `embed` subcommands."""
    t = sub.add_parser("transcribe", help="speech to text with a whisper model (wav, mp3, flac, ogg, m4a, webm)")
    t.add_argument("file", help="the audio file")
    t.add_argument("--model", "-m", help="whisper model (default: OMG_WHISPER_MODEL or the store's whisper model)")
    t.add_argument("--format", "-f", choices=FORMATS, default="text", help="output format (default: text)")
    t.add_argument("--language", "-l", help="language code; detected when not given")
    t.add_argument("--translate", action="store_true", help="translate to English")
    t.add_argument("--prompt", help="text that conditions the first window (names, spelling)")
    t.add_argument("--word-timestamps", action="store_true", help="word timings (verbose_json)")
    t.add_argument("--vad", action="store_true", help="skip silence with the VAD filter")
    t.add_argument("--beam-size", type=int, help="beam width (default: OMG_WHISPER_BEAM_SIZE)")
    t.add_argument("--temperature", type=float, help="sampling temperature (default: fallback schedule)")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    t.set_defaults(func=lambda a, s: run_transcribe(Client(s), a))
    e = sub.add_parser("embed", help="embed texts with a model; prints one JSON vector per text")
    e.add_argument("model")
    e.add_argument("text", nargs="*", help="texts to embed (default: lines of stdin)")
    e.add_argument("--dimensions", type=int, help="keep this many dimensions (then normalised)")
    e.add_argument("--raw", action="store_true", help="do not normalise the vectors")
    e.add_argument("--json", action="store_true", help="one JSON object with all vectors")
    e.set_defaults(func=lambda a, s: run_embed(Client(s), a))
