"""A transcription as the stream builds it, and its renderings: text, srt, vtt, OpenAI json and
verbose_json. Shared by the HTTP API and `omg transcribe`, so both print the same thing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ohmygpu.runtime.v1 import runtime_pb2

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")

# Whisper's language codes -> the names OpenAI's verbose_json uses; others are shown as codes.
_LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "fa": "persian", "sk": "slovak", "sl": "slovenian", "bn": "bengali",
}


@dataclass
class Transcript:
    """Info and segments of one transcription, in stream order."""

    task: str = "transcribe"
    info: runtime_pb2.TranscriptionInfo = field(default_factory=runtime_pb2.TranscriptionInfo)
    segments: list[runtime_pb2.Segment] = field(default_factory=list)

    def add(self, message: runtime_pb2.TranscribeResponse) -> runtime_pb2.Segment | None:
        """Take one stream message; returns the segment it carried, if any."""
        if message.HasField("info"):
            self.info.CopyFrom(message.info)
            return None
        if message.HasField("segment"):
            self.segments.append(message.segment)
            return message.segment
        return None

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()

    def render(self, fmt: str, *, words: bool = False, segments: bool = True) -> str:
        """The transcript in `fmt` (one of FORMATS), as the response body."""
        if fmt == "text":
            return self.text + "\n"
        if fmt == "srt":
            return "".join(f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text.strip()}\n\n"
                           for i, s in enumerate(self.segments, 1))
        if fmt == "vtt":
            return "WEBVTT\n\n" + "".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text.strip()}\n\n"
                                          for s in self.segments)
        if fmt == "verbose_json":
            return json.dumps(self.verbose(words=words, segments=segments))
        return json.dumps({"text": self.text, "usage": self.usage()})

    def usage(self) -> dict[str, Any]:
        return {"type": "duration", "seconds": round(self.info.duration)}

    def verbose(self, *, words: bool, segments: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "language": _LANGUAGES.get(self.info.language, self.info.language),
            "duration": round(self.info.duration, 3),
            "text": self.text,
        }
        if segments:
            out["segments"] = [{
                "id": s.id, "seek": s.seek, "start": _r(s.start), "end": _r(s.end), "text": s.text,
                "tokens": list(s.tokens), "temperature": _r(s.temperature), "avg_logprob": _r(s.avg_logprob),
                "compression_ratio": _r(s.compression_ratio), "no_speech_prob": _r(s.no_speech_prob),
            } for s in self.segments]
        if words:
            out["words"] = [{"word": w.word.strip(), "start": _r(w.start), "end": _r(w.end)}
                            for s in self.segments for w in s.words]
        out["usage"] = self.usage()
        return out


def media_type(fmt: str) -> str:
    """The Content-Type of a rendering."""
    return {"text": "text/plain; charset=utf-8", "srt": "application/x-subrip; charset=utf-8",
            "vtt": "text/vtt; charset=utf-8"}.get(fmt, "application/json")


def _r(x: float) -> float:
    return round(float(x), 3)


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
