"""Checks an audio upload before it is queued: that it decodes and has a length.

The daemon answers a bad upload (random bytes, an empty file, 0 seconds of sound) with a 400
at once, instead of loading a model to find out. PyAV comes with the `whisper` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ohmygpu.core.errors import InvalidArgument, MissingExtra

SEND = "send wav, mp3, flac, ogg, m4a or webm"


def too_long(seconds: float, limit: float) -> str:
    """The message for audio over the length limit."""
    return (f"the audio is {_minutes(seconds)} long, over the limit of {_minutes(limit)} "
            "(OMG_MAX_AUDIO_SECONDS); split it, or raise the limit")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about the audio."""

    duration_s: float
    codec: str
    sample_rate: int


def probe(path: Path, *, max_seconds: float = 0) -> AudioInfo:
    """Open `path` and read its first audio stream's metadata; raises InvalidArgument when it
    is not audio, holds no sound or, by its header, lasts over `max_seconds` (0: no limit),
    MissingExtra when PyAV is not installed.

    The length check comes before any decoding: decoded audio costs memory by its length, not by
    the upload's size (1 MiB whose header says 100 Hz is 2.9 hours, 670 MB once resampled)."""
    try:
        import av
    except ImportError:
        raise MissingExtra("whisper", "whisper") from None
    if path.stat().st_size == 0:
        raise InvalidArgument("the audio file is empty", param="file")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidArgument(f"the file is not audio (no audio stream in it); {SEND}", param="file")
            stream = container.streams.audio[0]
            duration = 0.0
            if container.duration:
                duration = container.duration / av.time_base
            elif stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            else:
                # No length in the header (raw streams, a 0-frame wav): count decoded samples,
                # stopping at the first second, which is all this check needs.
                samples = 0
                for frame in container.decode(stream):
                    samples += frame.samples
                    if samples >= (stream.rate or 16000):
                        break
                duration = samples / (stream.rate or 16000)
            if duration <= 0:
                raise InvalidArgument("the audio is empty (0 seconds of sound)", param="file")
            if max_seconds and duration > max_seconds:
                raise InvalidArgument(too_long(duration, max_seconds), param="file")
            return AudioInfo(duration, stream.codec_context.name, stream.rate or 0)
    except av.error.FFmpegError as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InvalidArgument(f"the file is not audio that can be decoded ({reason}); {SEND}",
                              param="file") from None
