"""Text to speech models told from their files: a Piper voice or a Kokoro model folder.

- **Piper**: `NAME.onnx` with `NAME.onnx.json` beside it (the voice's config: sample rate, the
  espeak-ng language, the phoneme id map, speaker names for multi-speaker voices).
- **Kokoro**: a folder with one `.onnx` (Kokoro-82M, any quantization), its voice style vectors as
  a NumPy `.npz` (kokoro-onnx's `voices-v1.0.bin` is one too: a zip of `<voice>.npy`) and its
  phoneme vocabulary (`vocab.json`, or a `config.json` with a `vocab` table).

Only JSON configs and a zip's list of names are read (bounded), never the weights: the daemon
learns the voices without loading an inference library. Kokoro voice names carry their language
and gender in their first two letters ("jf_alpha": Japanese, female), per the model's own naming.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.runtime.v1 import runtime_pb2

PIPER, KOKORO = "piper", "kokoro"
KOKORO_SAMPLE_RATE = 24_000
_MAX_JSON = 4 << 20
_MAX_VOICES = 4096
# Kokoro's voice prefixes (hexgrad/Kokoro-82M VOICES.md): language letter, then f/m.
KOKORO_LANGUAGES = {"a": "en-us", "b": "en-gb", "j": "ja", "z": "cmn", "e": "es", "f": "fr-fr",
                    "h": "hi", "i": "it", "p": "pt-br"}
_GENDERS = {"f": "female", "m": "male"}


def read_json(path: Path) -> dict:
    """A JSON object file of at most 4 MiB; raises InvalidModelFile naming only the file."""
    try:
        if path.stat().st_size > _MAX_JSON:
            raise InvalidModelFile(f"{path.name} is over {_MAX_JSON >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidModelFile(f"{path.name} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise InvalidModelFile(f"{path.name} is not a JSON object")
    return data


def piper_voice_names(config: dict, stem: str) -> list[str]:
    """A Piper voice's names: its speakers for a multi-speaker voice, else its dataset's name
    ("joe" for en_US-joe-medium), else the file's stem."""
    speakers = config.get("speaker_id_map")
    if isinstance(speakers, dict) and len(speakers) > 1:
        return sorted(speakers, key=lambda s: speakers[s] if isinstance(speakers[s], int) else 0)
    dataset = config.get("dataset")
    return [dataset if isinstance(dataset, str) and dataset else stem]


def piper_info(config_path: Path) -> assets_pb2.SpeechInfo:
    """SpeechInfo of a Piper voice from its .onnx.json; raises InvalidModelFile."""
    config = read_json(config_path)
    ids = config.get("phoneme_id_map")
    audio = config.get("audio") if isinstance(config.get("audio"), dict) else {}
    espeak = config.get("espeak") if isinstance(config.get("espeak"), dict) else {}
    rate = audio.get("sample_rate")
    if not isinstance(ids, dict) or not ids or not isinstance(rate, int) or not 8000 <= rate <= 192_000:
        raise InvalidModelFile(f"{config_path.name} is not a Piper voice config (no phoneme_id_map or sample rate)")
    if config.get("phoneme_type", "espeak") != "espeak":
        raise InvalidModelFile(f"{config_path.name} uses {config.get('phoneme_type')!r} phonemes; only "
                               "espeak-ng phonemes are supported")
    stem = config_path.name.removesuffix(".onnx.json")
    language = espeak.get("voice") if isinstance(espeak.get("voice"), str) else "en-us"
    return assets_pb2.SpeechInfo(engine=PIPER, voices=piper_voice_names(config, stem)[:_MAX_VOICES],
                                 sample_rate=rate, language=language)


def npz_names(path: Path) -> list[str]:
    """The arrays of a .npz (a zip of `<name>.npy`), by name, without reading them."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.removesuffix(".npy") for n in z.namelist() if n.endswith(".npy")]
    except (OSError, zipfile.BadZipFile):
        raise InvalidModelFile(f"{path.name} is not a NumPy .npz of voices") from None
    if not names or len(names) > _MAX_VOICES:
        raise InvalidModelFile(f"{path.name} holds no voices (or more than {_MAX_VOICES})")
    return sorted(names)


def kokoro_vocab(path: Path) -> dict:
    """Kokoro's phoneme -> token id table from vocab.json or config.json (`vocab`)."""
    vocab = read_json(path).get("vocab")
    if not isinstance(vocab, dict) or not vocab or not all(isinstance(v, int) for v in vocab.values()):
        raise InvalidModelFile(f"{path.name} has no phoneme vocabulary ('vocab')")
    return vocab


def kokoro_info(voices_path: Path, vocab_path: Path) -> assets_pb2.SpeechInfo:
    kokoro_vocab(vocab_path)
    names = npz_names(voices_path)
    return assets_pb2.SpeechInfo(engine=KOKORO, voices=names, sample_rate=KOKORO_SAMPLE_RATE,
                                 language=voice_language(names[0], ""))


def _is_voices_file(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".npz") or (lower.rsplit("/", 1)[-1].startswith("voices") and lower.endswith(".bin"))


def find_speech(files: dict[str, Path]) -> tuple[str, assets_pb2.SpeechInfo] | None:
    """(main file name, SpeechInfo) when `files` (name in the model -> local path) are a Piper
    voice or a Kokoro model; None when they are not speech files. Raises InvalidModelFile for
    files that look like one and are broken."""
    onnx = sorted(n for n in files if n.lower().endswith(".onnx"))
    if not onnx:
        return None
    for name in onnx:
        if name + ".json" in files:
            return name, piper_info(files[name + ".json"])
    voices = sorted(n for n in files if _is_voices_file(n))
    vocab = next((n for n in sorted(files) if n.rsplit("/", 1)[-1] == "vocab.json"), "")
    if not vocab:
        # kokoro-onnx's config.json holds the vocabulary; another model's config.json (an ONNX
        # export of a transformers model) does not, and is not a Kokoro model.
        config = next((n for n in sorted(files) if n.rsplit("/", 1)[-1] == "config.json"), "")
        if config and voices and "vocab" in read_json(files[config]):
            vocab = config
    if voices and vocab:
        main = next((n for n in onnx if "kokoro" in n.lower()), onnx[0])
        return main, kokoro_info(files[voices[0]], files[vocab])
    return None


def speech_info(files: dict[str, Path]) -> assets_pb2.SpeechInfo:
    """The SpeechInfo of files classify_files found to be a text to speech model."""
    found = find_speech(files)
    if found is None:
        raise InvalidModelFile("the files are not a Piper voice or a Kokoro model")
    return found[1]


def voice_language(voice: str, default: str) -> str:
    """A voice's language: a Kokoro voice's from its prefix, else `default`."""
    if len(voice) > 2 and voice[2] == "_" and voice[1] in _GENDERS:
        return KOKORO_LANGUAGES.get(voice[0], default)
    return default


def voices_of(record: assets_pb2.InstallRecord) -> list[runtime_pb2.Voice]:
    """The voices of a text to speech record, as ListVoices answers them."""
    info = record.speech
    out = []
    for voice in info.voices:
        gender = _GENDERS.get(voice[1], "") if info.engine == KOKORO and len(voice) > 2 and voice[2] == "_" else ""
        out.append(runtime_pb2.Voice(id=voice, language=voice_language(voice, info.language) if
                                     info.engine == KOKORO else info.language, gender=gender, model=record.name))
    return out
