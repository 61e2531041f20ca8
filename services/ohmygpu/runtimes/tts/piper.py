"""A Piper voice (VITS in ONNX) run by onnxruntime: espeak-ng IPA -> phoneme ids -> audio.

The ids are made as piper-phonemize makes them: `^`, then each phoneme (a code point of the
decomposed IPA) followed by the pad `_`, then `$`. Inputs: `input` (ids), `input_lengths`,
`scales` (noise, length = 1/speed, noise_w), and `sid` for multi-speaker voices.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
from ohmygpu.core.speech_files import piper_voice_names, read_json
from ohmygpu.runtimes.tts import phonemes
from ohmygpu.runtimes.tts.engine import Engine, onnx_session

log = logging.getLogger("ohmygpu.worker.tts.piper")


class PiperVoice(Engine):
    engine = "piper"

    def __init__(self, model: Path, config: Path, *, threads: int) -> None:
        cfg = read_json(config)
        self.sample_rate = int(cfg["audio"]["sample_rate"])
        self.language = (cfg.get("espeak") or {}).get("voice") or "en-us"
        self.ids: dict[str, list[int]] = cfg["phoneme_id_map"]
        self.phoneme_map: dict[str, list[str]] = cfg.get("phoneme_map") or {}
        inference = cfg.get("inference") or {}
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        names = piper_voice_names(cfg, config.name.removesuffix(".onnx.json"))
        speakers = cfg.get("speaker_id_map") or {}
        self.speakers = {name: int(speakers.get(name, 0)) for name in names}
        self.voices = list(self.speakers)
        self.session = onnx_session(model, threads)
        self.multi_speaker = any(i.name == "sid" for i in self.session.get_inputs())

    def phonemize(self, sentence: str, voice: str, language: str) -> str:
        return phonemes.phonemize(sentence, language or self.language)

    def _ids(self, ipa: str) -> list[int]:
        ids = list(self.ids["^"]) + list(self.ids["_"])
        for ch in unicodedata.normalize("NFD", ipa):
            for p in self.phoneme_map.get(ch, [ch]):
                if p in self.ids:
                    ids.extend(self.ids[p])
                    ids.extend(self.ids["_"])
        ids.extend(self.ids["$"])
        return ids

    def synthesize(self, ipa: str, voice: str, speed: float) -> np.ndarray:
        ids = self._ids(ipa)
        feeds: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([self.noise_scale, self.length_scale / speed, self.noise_w], dtype=np.float32),
        }
        if self.multi_speaker:
            feeds["sid"] = np.array([self.speakers.get(voice, 0)], dtype=np.int64)
        audio = self.session.run(None, feeds)[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)
