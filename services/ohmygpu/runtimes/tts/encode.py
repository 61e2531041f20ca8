"""Streaming encoders for synthesized audio: float32 mono samples in, the bytes of the chosen
format out as they are produced (each SpeakResponse carries what was written since the last).

WAV and PCM are written by hand (a header and 16-bit samples); MP3, Opus (in Ogg), AAC (ADTS) and
FLAC by PyAV (FFmpeg's encoders). The container writes into a sink that only appends: nothing is
ever seeked back to, because bytes already sent to a client cannot be rewritten. FLAC therefore
ends without the total sample count in its header, as any streamed FLAC does; decoders read it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from ohmygpu.core import wav
from ohmygpu.runtime.v1 import runtime_pb2

log = logging.getLogger("ohmygpu.worker.tts")


@dataclass(frozen=True)
class Format:
    """How one AudioEncoding is written."""

    content_type: str
    container: str = ""  # FFmpeg muxer; empty: written by hand
    codec: str = ""
    rate: int = 0  # the encoder's sample rate (0: the model's own)
    bit_rate: int = 0


FORMATS: dict[int, Format] = {
    runtime_pb2.AUDIO_ENCODING_MP3: Format("audio/mpeg", "mp3", "libmp3lame", bit_rate=96_000),
    # Opus runs at 48 kHz (Piper's 22.05 kHz is not a rate it takes).
    runtime_pb2.AUDIO_ENCODING_OPUS: Format("audio/ogg", "ogg", "libopus", rate=48_000, bit_rate=48_000),
    runtime_pb2.AUDIO_ENCODING_AAC: Format("audio/aac", "adts", "aac", bit_rate=96_000),
    runtime_pb2.AUDIO_ENCODING_FLAC: Format("audio/flac", "flac", "flac"),
    runtime_pb2.AUDIO_ENCODING_WAV: Format("audio/wav"),
    runtime_pb2.AUDIO_ENCODING_PCM: Format("audio/pcm"),
}
# Ogg holds back pages of a second by default; a short page gets each sentence out at once.
_MUXER_OPTIONS = {"ogg": {"page_duration": "200000", "flush_packets": "1"}}
FORMATS[runtime_pb2.AUDIO_ENCODING_UNSPECIFIED] = FORMATS[runtime_pb2.AUDIO_ENCODING_MP3]  # OpenAI's default


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] (clipped) to 16-bit PCM."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


class _Sink:
    """An append-only file for PyAV: what the muxer writes is collected until taken."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class Encoder:
    """One stream's encoder: `encode(samples)` returns the bytes ready so far, `finish()` the rest."""

    def __init__(self, encoding: int, sample_rate: int) -> None:
        self.format = FORMATS.get(encoding, FORMATS[runtime_pb2.AUDIO_ENCODING_MP3])
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._started = False
        self._container: Any = None
        if self.format.container:
            self._open()

    def _open(self) -> None:
        import av

        self._sink = _Sink()
        # A small buffer, so bytes reach the client about every sentence rather than every 32 KiB.
        self._container = av.open(self._sink, mode="w", format=self.format.container, buffer_size=4096,
                                  container_options=_MUXER_OPTIONS.get(self.format.container, {}))
        rate = self.format.rate or self.sample_rate
        self._stream = self._container.add_stream(self.format.codec, rate=rate, layout="mono")
        if self.format.bit_rate:
            self._stream.bit_rate = self.format.bit_rate
        self._resampler = av.AudioResampler(format=self._stream.format.name, layout="mono", rate=rate)
        self._pts = 0

    def encode(self, samples: np.ndarray) -> bytes:
        pcm = to_int16(samples)
        if not self.format.container:
            head = b""
            if not self._started and self.encoding == runtime_pb2.AUDIO_ENCODING_WAV:
                head = wav.header(self.sample_rate)
            self._started = True
            return head + pcm.tobytes()
        if pcm.size:
            import av

            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.sample_rate
            for out in self._resampler.resample(frame):
                self._mux(out)
        return self._sink.take()

    def _mux(self, frame: Any) -> None:
        frame.pts = self._pts
        self._pts += frame.samples
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def finish(self) -> bytes:
        """The encoder's tail (buffered frames, the container's trailer); the stream is closed after."""
        if not self.format.container:
            return b"" if self._started else self.encode(np.zeros(0, np.float32))
        for out in self._resampler.resample(None):
            self._mux(out)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()

    def close(self) -> None:
        """Release the encoder without a trailer (a cancelled stream)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception as e:  # noqa: BLE001 - an abandoned stream's trailer may not be writable
                log.debug("closing an abandoned encoder: %r", e)
            self._container = None
