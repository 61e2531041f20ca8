"""Kokoro-82M (StyleTTS 2 in ONNX, as kokoro-onnx exports it) run by onnxruntime.

Inputs: `tokens` (the phonemes' vocabulary ids between two 0 pads, at most 510), `style` (the
voice's style vector for that many tokens: a voice is a (510, 1, 256) table) and `speed`.
Japanese voices (`j*_`) get kana phonemized by espeak-ng's `ja` voice in misaki's spelling
(phonemes.phonemize_japanese); every other voice espeak-ng's IPA for its language.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ohmygpu.core.speech_files import KOKORO_SAMPLE_RATE, kokoro_vocab, voice_language
from ohmygpu.runtimes.tts import phonemes
from ohmygpu.runtimes.tts.engine import Engine, onnx_session

MAX_TOKENS = 510  # the model's 512 positions less the two pads


class KokoroModel(Engine):
    engine = "kokoro"
    sample_rate = KOKORO_SAMPLE_RATE

    def __init__(self, model: Path, voices: Path, vocab: Path, *, threads: int) -> None:
        self.vocab = kokoro_vocab(vocab)
        with np.load(voices, allow_pickle=False) as npz:  # never unpickle a model file
            self.styles = {name: np.asarray(npz[name], dtype=np.float32).reshape(-1, 256) for name in npz.files}
        self.voices = sorted(self.styles)
        self.language = voice_language(self.voices[0], "en-us")
        self.session = onnx_session(model, threads)
        names = {i.name for i in self.session.get_inputs()}
        self.token_input = "tokens" if "tokens" in names else "input_ids"  # older/newer kokoro-onnx exports
        self.speed_dtype = np.int32 if self.session.get_inputs()[-1].type == "tensor(int32)" else np.float32

    def phonemize(self, sentence: str, voice: str, language: str) -> str:
        lang = language or voice_language(voice, self.language)
        if lang == "ja":
            return phonemes.phonemize_japanese(sentence)
        return phonemes.phonemize(sentence, lang)

    def pieces(self, ipa: str) -> list[str]:
        """`ipa` cut at spaces into pieces of at most MAX_TOKENS phonemes the model knows."""
        known = "".join(c for c in ipa if c in self.vocab)
        out: list[str] = []
        while len(known) > MAX_TOKENS:
            cut = known.rfind(" ", 0, MAX_TOKENS)
            cut = cut if cut > MAX_TOKENS // 2 else MAX_TOKENS
            out.append(known[:cut])
            known = known[cut:].lstrip()
        return out + ([known] if known.strip() else [])

    def synthesize(self, ipa: str, voice: str, speed: float) -> np.ndarray:
        chunks = []
        for piece in self.pieces(ipa):
            tokens = [self.vocab[c] for c in piece]
            style = self.styles[voice]
            feeds = {
                self.token_input: np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": style[min(len(tokens), len(style) - 1)].reshape(1, 256),
                "speed": np.array([speed], dtype=self.speed_dtype),
            }
            chunks.append(np.asarray(self.session.run(None, feeds)[0], dtype=np.float32).reshape(-1))
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
