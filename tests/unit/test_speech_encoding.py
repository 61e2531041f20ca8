"""The TTS worker's pure parts: streaming encoders (every format decodes to the samples given,
fed in pieces), WAV headers, sentence and clause splitting, espeak-ng phonemes (English and
Japanese kana in Kokoro's spelling, kanji refused), and the gateway's reading of OpenAI's body."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from ohmygpu.core import wav
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.gateway.speech import speak_request
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.tts import phonemes
from ohmygpu.runtimes.tts.encode import Encoder

RATE = 22050


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def encode_in_pieces(encoding: int, samples: np.ndarray, pieces: int = 4) -> list[bytes]:
    enc = Encoder(encoding, RATE)
    out = [enc.encode(part) for part in np.array_split(samples, pieces)]
    return out + [enc.finish()]


@pytest.mark.parametrize("encoding,container,rate", [
    (runtime_pb2.AUDIO_ENCODING_MP3, "mp3", RATE), (runtime_pb2.AUDIO_ENCODING_OPUS, "ogg", 48000),
    (runtime_pb2.AUDIO_ENCODING_AAC, "aac", RATE), (runtime_pb2.AUDIO_ENCODING_FLAC, "flac", RATE),
    (runtime_pb2.AUDIO_ENCODING_WAV, "wav", RATE), (runtime_pb2.AUDIO_ENCODING_UNSPECIFIED, "mp3", RATE),
])
def test_each_format_streams_and_decodes_to_its_duration(encoding: int, container: str, rate: int) -> None:
    import av

    parts = encode_in_pieces(encoding, tone(3.0))
    assert sum(1 for p in parts[:-1] if p) >= 2  # bytes come out while encoding, not only at the end
    with av.open(io.BytesIO(b"".join(parts))) as c:
        assert c.format.name.split(",")[0] == container
        frames = list(c.decode(audio=0))
    assert frames[0].sample_rate == rate
    assert sum(f.samples for f in frames) / rate == pytest.approx(3.0, abs=0.12)


def test_pcm_is_raw_16_bit_samples_clipped() -> None:
    parts = encode_in_pieces(runtime_pb2.AUDIO_ENCODING_PCM, np.array([0.0, 0.5, -2.0, 2.0], np.float32), 2)
    assert np.frombuffer(b"".join(parts), "<i2").tolist() == [0, 16383, -32767, 32767]


def test_a_streamed_wav_gets_its_sizes_when_whole() -> None:
    streamed = b"".join(encode_in_pieces(runtime_pb2.AUDIO_ENCODING_WAV, tone(1.0)))
    assert streamed[4:8] == b"\xff\xff\xff\xff"
    whole = wav.with_sizes(streamed)
    with wave.open(io.BytesIO(whole)) as w:
        assert w.getframerate() == RATE and w.getnframes() == RATE and w.getsampwidth() == 2
    assert wav.with_sizes(b"ID3 not a wav") == b"ID3 not a wav"


def test_sentences_split_for_streaming() -> None:
    text = "Dr. Smith paid 3.50 today. Is it? Yes!\nNew line こんにちは。せかい！"
    assert phonemes.sentences(text) == ["Dr. Smith paid 3.50 today.", "Is it?", "Yes!", "New line こんにちは。",
                                        "せかい！"]
    long = phonemes.sentences("word, " * 200)
    assert len(long) > 3 and all(len(s) <= phonemes.MAX_SENTENCE_CHARS for s in long)
    assert phonemes.sentences("a\x00b\x07c") == ["a b c"]


def test_clauses_keep_their_punctuation() -> None:
    assert phonemes.clauses("Well, hello there; friend!") == [("Well", ","), ("hello there", ";"), ("friend", "!")]
    assert phonemes.clauses("はい、そうです。") == [("はい", ","), ("そうです", ".")]


def test_english_phonemes_from_espeak_ng() -> None:
    assert phonemes.phonemize("Hello, world.", "en-us") == "həlˈoʊ, wˈɜːld."
    # Text is text: espeak's [[phoneme]] input and option-like words are spoken, not obeyed.
    assert "hˈɛlp" in phonemes.phonemize("[[h@l]] --help", "en-us")
    with pytest.raises(phonemes.Unphonemizable, match="no voice for language"):
        phonemes.phonemize("hi", "xx-nope")


def test_japanese_kana_in_kokoro_spelling_and_kanji_refused() -> None:
    assert phonemes.phonemize_japanese("こんにちは、せかい。") == "konniʨiha, sekai."
    mixed = phonemes.phonemize_japanese("わたしは Tokyo に います。")
    assert mixed.startswith("wataɕiha ") and "ˈoʊ" in mixed  # the latin word in English phonemes
    with pytest.raises(phonemes.Unphonemizable, match="kanji"):
        phonemes.phonemize_japanese("今日は")


def test_openai_speech_body() -> None:
    req, sse = speak_request({"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "opus",
                              "speed": 1.5})
    assert not sse and req.encoding == runtime_pb2.AUDIO_ENCODING_OPUS and req.speed == 1.5
    req, sse = speak_request({"model": "m", "input": "hi", "stream_format": "sse"})
    assert sse and req.encoding == runtime_pb2.AUDIO_ENCODING_MP3 and not req.HasField("speed")
    for body, param in (({"input": "hi"}, "model"), ({"model": "m"}, "input"),
                        ({"model": "m", "input": "hi", "speed": 5}, "speed"),
                        ({"model": "m", "input": 3}, "input"),
                        ({"model": "m", "input": "hi", "response_format": "ogg"}, "response_format"),
                        ({"model": "m", "input": "hi", "stream_format": "chunks"}, "stream_format"),
                        ({"model": "m", "input": "hi", "instructions": "sing"}, "instructions"),
                        ({"model": "m", "input": "hi", "colour": "blue"}, "colour")):
        with pytest.raises(InvalidArgument) as e:
            speak_request(body)
        assert e.value.param == param
