"""`omg say TEXT -o out.wav` and `omg voices`: text to speech through the daemon.

The audio is written as it streams in (to a temporary file beside the output, renamed when
complete, so an interrupted `say` leaves no half file), in the format the output's extension
names unless --format says otherwise; without -o it goes to stdout when that is not a terminal.
A streamed WAV's header carries no length; the finished file's is filled in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ohmygpu.cli.client import Client, CliError
from ohmygpu.core import wav
from ohmygpu.runtime.v1 import runtime_pb2

ENCODINGS = {
    "mp3": runtime_pb2.AUDIO_ENCODING_MP3, "opus": runtime_pb2.AUDIO_ENCODING_OPUS,
    "aac": runtime_pb2.AUDIO_ENCODING_AAC, "flac": runtime_pb2.AUDIO_ENCODING_FLAC,
    "wav": runtime_pb2.AUDIO_ENCODING_WAV, "pcm": runtime_pb2.AUDIO_ENCODING_PCM,
}
_BY_EXTENSION = {".mp3": "mp3", ".opus": "opus", ".ogg": "opus", ".aac": "aac", ".flac": "flac",
                 ".wav": "wav", ".pcm": "pcm", ".raw": "pcm"}


def output_format(output: str | None, asked: str | None) -> str:
    """--format, else the output's extension, else wav."""
    if asked:
        return asked
    if output and output != "-":
        return _BY_EXTENSION.get(Path(output).suffix.lower(), "wav")
    return "wav"


def run_say(client: Client, args: argparse.Namespace) -> int:
    text = " ".join(args.text) if args.text and args.text != ["-"] else sys.stdin.read()
    if not text.strip():
        raise CliError("nothing to say: give TEXT or pipe it on stdin")
    fmt = output_format(args.output, args.format)
    to_stdout = not args.output or args.output == "-"
    if to_stdout and sys.stdout.isatty():
        raise CliError("refusing to write audio to a terminal: give -o FILE (e.g. -o out.wav) or pipe it")
    req = runtime_pb2.SpeakRequest(model=args.model or "", input=text, voice=args.voice or "",
                                   encoding=ENCODINGS[fmt], language=args.language or "")
    if args.speed is not None:
        req.speed = args.speed
    call = client.stream(client.audio.Speak, req)
    if to_stdout:
        out = sys.stdout.buffer
        try:
            for message in client.iterate(call):
                out.write(message.audio)
                out.flush()
        except KeyboardInterrupt:
            call.cancel()
            return 130
        return 0
    target = Path(args.output).expanduser()
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent or ".")
    seconds = 0.0
    try:
        with os.fdopen(fd, "w+b") as f:
            for message in client.iterate(call):
                f.write(message.audio)
                seconds = message.seconds
            if fmt == "wav":
                f.seek(0)
                whole = wav.with_sizes(f.read())
                f.seek(0)
                f.write(whole)
                f.truncate()
        os.replace(partial, target)
    except KeyboardInterrupt:
        call.cancel()
        return 130
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    if not args.quiet:
        print(f"wrote {target} ({fmt}, {seconds:.1f} s)", file=sys.stderr)
    return 0


def run_voices(client: Client, args: argparse.Namespace) -> int:
    resp = client.call(client.audio.ListVoices, runtime_pb2.ListVoicesRequest(model=args.model or ""))
    if args.json:
        print(json.dumps([{"id": v.id, "language": v.language, "gender": v.gender, "model": v.model}
                          for v in resp.voices]))
        return 0
    if not resp.voices:
        print("no voices: add a Piper voice (omg model add VOICE.onnx) or a Kokoro model folder", file=sys.stderr)
        return 0
    print(f"{'VOICE':<20} {'LANGUAGE':<10} {'GENDER':<8} MODEL")
    for v in resp.voices:
        print(f"{v.id:<20} {v.language:<10} {v.gender or '-':<8} {v.model}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The `say` and `voices` subcommands."""
    s = sub.add_parser("say", help="text to speech with a Piper or Kokoro voice (wav, mp3, opus, aac, flac, pcm)")
    s.add_argument("text", nargs="*", help="what to say (default or '-': stdin)")
    s.add_argument("--output", "-o", help="audio file to write (its extension picks the format); default: stdout")
    s.add_argument("--model", "-m", help="speech model (default: OMG_TTS_MODEL or the store's first)")
    s.add_argument("--voice", "-v", help="voice (see `omg voices`; default: the model's first)")
    s.add_argument("--format", "-f", choices=list(ENCODINGS), help="audio format (default: from -o, else wav)")
    s.add_argument("--speed", type=float, help="speaking rate, 0.25 to 4 (default 1)")
    s.add_argument("--language", "-l", help="phonemizer language (espeak-ng code, e.g. en-gb); default: the voice's")
    s.add_argument("--quiet", "-q", action="store_true", help="no summary line")
    s.set_defaults(func=lambda a, st: run_say(Client(st), a))
    v = sub.add_parser("voices", help="list the voices of the installed speech models")
    v.add_argument("--model", "-m", help="only this model's voices")
    v.add_argument("--json", action="store_true", help="as JSON")
    v.set_defaults(func=lambda a, st: run_voices(Client(st), a))
