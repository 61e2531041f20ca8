"""A PEFT LoRA adapter written as llama.cpp's GGUF LoRA, as convert_lora_to_gguf.py writes one.

Metadata: general.architecture (the base's llama.cpp architecture: the loader refuses any
other), general.type "adapter", adapter.type "lora", adapter.lora.alpha. Tensors: per adapted
weight, `<base GGUF tensor name>.lora_a` and `.lora_b` (blk.N.attn_q.weight.lora_a), with PEFT's
shapes: A is (rank, n_in) and B is (n_out, rank) as numpy arrays, so that in ggml's order
a.ne = [n_in, rank] and b.ne = [rank, n_out], which llama-adapter.cpp checks against the base.

llama.cpp stores a llama-architecture model's q and k projections with their rows permuted for
its rope layout (convert_hf_to_gguf.py's LlamaModel.permute); a LoRA's B, whose rows are the
projection's outputs, is permuted the same way, or the adapter would add its change to the
wrong rows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

# Hugging Face model_type -> llama.cpp architecture, where they differ by more than the name.
_ARCH = {"mistral": "llama", "mixtral": "llama"}
_PERMUTED = {"llama"}  # architectures whose q/k rows llama.cpp permutes
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, on the rows of `weights`."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def architecture(model_type: str) -> str:
    return _ARCH.get(model_type, model_type)


def write(state: dict[str, Any], config: Any, alpha: float, path: Path) -> int:
    """Write the PEFT state dict `state` (torch tensors) of a model with HF `config` to `path`;
    returns the number of tensors. Raises ValueError for an architecture or a module llama.cpp's
    tensor map does not know."""
    import gguf

    arch_name = architecture(config.model_type)
    arches = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch_name not in arches:
        raise ValueError(f"llama.cpp has no architecture '{arch_name}': the adapter cannot be converted to GGUF")
    names = gguf.get_tensor_name_map(arches[arch_name], config.num_hidden_layers)
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    tensors: list[tuple[str, np.ndarray]] = []
    for key in sorted(state):
        m = _KEY.match(key)
        if m is None:
            raise ValueError(f"not a LoRA tensor: {key}")
        module = m.group("module")
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ValueError(f"llama.cpp's tensor map has no name for {module}")
        data = state[key].detach().float().cpu().numpy()
        if m.group("ab") == "B" and arch_name in _PERMUTED:
            if module.endswith("q_proj"):
                data = _permute(data, n_head, n_head)
            elif module.endswith("k_proj"):
                data = _permute(data, n_head, n_kv)
        tensors.append((f"{gguf_name}.lora_{m.group('ab').lower()}", np.ascontiguousarray(data, dtype=np.float32)))
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)
    return len(tensors)
