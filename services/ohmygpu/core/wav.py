"""WAV headers for 16-bit mono PCM, pure and stdlib-only: the TTS worker writes one before it
knows how long the audio will be (a stream), and the gateway fixes the sizes of a whole file.

A streamed WAV's RIFF and data sizes are 0xFFFFFFFF, as OpenAI's streamed WAV has them: FFmpeg,
browsers and `wave`-reading tools take that as "until the end of the stream".
"""

from __future__ import annotations

import struct

HEADER_BYTES = 44
_UNKNOWN = 0xFFFFFFFF


def header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV; `data_bytes` None: a stream of unknown length."""
    data = _UNKNOWN if data_bytes is None else data_bytes
    riff = _UNKNOWN if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data))


def with_sizes(wav: bytes) -> bytes:
    """A whole WAV written as a stream (our header), with its real sizes filled in; other bytes
    are returned unchanged."""
    if len(wav) < HEADER_BYTES or wav[:4] != b"RIFF" or wav[36:40] != b"data":
        return wav
    data = len(wav) - HEADER_BYTES
    return wav[:4] + struct.pack("<I", 36 + data) + wav[8:40] + struct.pack("<I", data) + wav[HEADER_BYTES:]
