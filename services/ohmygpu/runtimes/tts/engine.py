"""What the worker needs of a speech engine (Piper, Kokoro), and opening one from a record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ohmygpu.assets.v1 import assets_pb2


class Engine:
    """One loaded model: its voices, and sentence -> phonemes -> samples (float32, mono)."""

    engine = ""
    sample_rate = 0
    language = ""
    voices: list[str]

    def phonemize(self, sentence: str, voice: str, language: str) -> str:
        """IPA for one sentence; raises phonemes.Unphonemizable for text it cannot read."""
        raise NotImplementedError

    def synthesize(self, ipa: str, voice: str, speed: float) -> np.ndarray:
        raise NotImplementedError


def onnx_session(model: Path, threads: int) -> Any:
    """An onnxruntime CPU session with `threads` intra-op threads and no inter-op pool."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])


def open_engine(record: assets_pb2.InstallRecord, threads: int) -> Engine:
    """The engine for a text to speech record (its SpeechInfo names it; files by name among its
    artifacts). Raises ValueError for a record missing a file its engine needs."""
    files = {Path(a.filename).name: Path(a.local_path) for a in record.artifacts}
    main = next((Path(a.local_path) for a in record.artifacts
                 if a.format == assets_pb2.ARTIFACT_FORMAT_ONNX), None)
    if main is None:
        raise ValueError("the record has no .onnx model")
    if record.speech.engine == "piper":
        from ohmygpu.runtimes.tts.piper import PiperVoice

        config = files.get(main.name + ".json")
        if config is None:
            raise ValueError("the Piper voice has no .onnx.json beside its .onnx")
        return PiperVoice(main, config, threads=threads)
    if record.speech.engine == "kokoro":
        from ohmygpu.runtimes.tts.kokoro import KokoroModel

        voices = next((p for n, p in sorted(files.items()) if n.endswith(".npz") or
                       (n.startswith("voices") and n.endswith(".bin"))), None)
        vocab = files.get("vocab.json") or files.get("config.json")
        if voices is None or vocab is None:
            raise ValueError("the Kokoro model lacks its voices (.npz) or vocabulary (vocab.json)")
        return KokoroModel(main, voices, vocab, threads=threads)
    raise ValueError(f"unknown speech engine '{record.speech.engine}'")
