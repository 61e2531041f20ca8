"""Memory a model needs before it loads: weights + KV cache for its context and sequences + runtime
overhead. An estimate for placement; the worker's measured use replaces it once loaded."""

from __future__ import annotations

from dataclasses import dataclass

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.run.v1 import run_spec_pb2

_RUNTIME_BASE = 64 << 20  # interpreter, llama.cpp, gRPC
_BATCH = 512  # llama.cpp's default n_batch: logits and compute buffers scale with it
_KV_BYTES = 2  # f16 cache entries


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


AUTO_CONTEXT_CAP = 8192  # OMG_CONTEXT_LENGTH=0: the model's trained window, at most this
_UNKNOWN_CONTEXT = 4096  # a GGUF that does not say its trained window


def context_window(record: assets_pb2.InstallRecord, requested: int) -> int:
    """The context a model loads with: `requested` (0: auto, the model's trained window up to
    AUTO_CONTEXT_CAP), never more than the model's own. The worker and this estimate both use it."""
    trained = record.gguf.context_length or record.transformers.context_length
    if requested <= 0:
        return min(trained, AUTO_CONTEXT_CAP) if trained else _UNKNOWN_CONTEXT
    return min(requested, trained) if trained else requested


def for_spec(record: assets_pb2.InstallRecord, spec: run_spec_pb2.RunSpec) -> MemoryEstimate:
    """What `record` needs loaded as `spec` says: the one estimate eviction and placement share,
    made from the spec the worker is given (a run's context, sequences and mode, not the defaults)."""
    return estimate(record, context_length=spec.resources.context_length,
                    parallel=max(1, spec.resources.max_concurrency), mode=spec.mode)


def estimate(record: assets_pb2.InstallRecord, *, context_length: int, parallel: int = 1,
             mode: int = run_spec_pb2.MODE_CHAT) -> MemoryEstimate:
    """Bytes `record` needs at `context_length` tokens per sequence (0: auto, see context_window)
    and `parallel` sequences, loaded for `mode` (embeddings: llama.cpp's batch is the whole context)."""
    if mode == run_spec_pb2.MODE_TRAINING:
        return _estimate_training(record)
    if record.kind == assets_pb2.MODEL_KIND_IMAGE:
        return _estimate_image(record)
    if record.HasField("transformers"):
        return _estimate_transformers(record, context_length, parallel, mode)
    if record.format != assets_pb2.ARTIFACT_FORMAT_GGUF:
        return _estimate_other(record)
    g = record.gguf
    n_ctx = context_window(record, context_length)
    weights = g.tensor_data_bytes or record.size_bytes
    head_dim = g.embedding_length // g.head_count if g.head_count else 0
    kv = 2 * g.block_count * n_ctx * max(1, parallel) * (g.head_count_kv or g.head_count) * head_dim * _KV_BYTES
    if not head_dim:  # metadata missing: assume the cache is as large as a tenth of the weights
        kv = weights // 10
    if mode == run_spec_pb2.MODE_EMBEDDINGS:
        # The worker sets n_batch = n_ctx; no logits, but one embedding per token comes out.
        overhead = _RUNTIME_BASE + g.embedding_length * 4 * n_ctx * 9
    else:
        overhead = _RUNTIME_BASE + g.vocab_size * 4 * _BATCH + g.embedding_length * 4 * _BATCH * 8
    return MemoryEstimate(weights=weights, kv_cache=kv, overhead=overhead)


_CT2_OVERHEAD = 160 << 20  # interpreter, CTranslate2, PyAV, 30 s mel windows and beams


_IMAGE_BASE = 256 << 20  # interpreter, stable-diffusion.cpp, Pillow
_IMAGE_COMPUTE_512 = 768 << 20  # compute buffers of a 512x512 generation (the VAE decode dominates)


_WEIGHT_FORMATS = (assets_pb2.ARTIFACT_FORMAT_GGUF, assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)


def _main_weights(record: assets_pb2.InstallRecord) -> int:
    """Bytes of the files in the model's main format (all of them when none says)."""
    return sum(a.size for a in record.artifacts if a.format == record.format) or record.size_bytes


def _estimate_image(record: assets_pb2.InstallRecord) -> MemoryEstimate:
    # Weights as stored (stable-diffusion.cpp keeps the file's types); compute buffers grow with
    # the pixels of the family's native size, which is what most requests ask for.
    # Every weight file: a multi-file model mixes formats (a GGUF transformer, safetensors VAE
    # and text encoders), and sd.cpp holds all of them.
    weights = sum(a.size for a in record.artifacts if a.format in _WEIGHT_FORMATS) or record.size_bytes
    side = record.diffusion.native_size or 512
    return MemoryEstimate(weights=weights, kv_cache=0,
                          overhead=_IMAGE_BASE + _IMAGE_COMPUTE_512 * side * side // (512 * 512))


def _estimate_other(record: assets_pb2.InstallRecord) -> MemoryEstimate:
    # CTranslate2 and safetensors models: the weight files as they are (int8 on CPU only makes
    # them smaller), no KV cache worth counting at whisper's 448-token decoder.
    weights = _main_weights(record)
    return MemoryEstimate(weights=weights, kv_cache=0, overhead=_CT2_OVERHEAD)


_TORCH_BASE = 320 << 20  # interpreter, torch, transformers and tokenizers imported (measured ~300 MiB)
_LOGITS = 64 << 20  # sampling's working copies of the logits
ENCODER_MAX_TOKENS = 2048  # tokens an encoder input is cut to (the worker uses the same bound)
_ENCODER_BATCH = 32  # inputs an embedding or rerank call runs at once (runtimes/hf/worker.py)


def _estimate_transformers(record: assets_pb2.InstallRecord, context_length: int, parallel: int,
                           mode: int) -> MemoryEstimate:
    """A transformers model, from its safetensors headers (core/transformers_info.py): the
    weights as stored (the worker loads them in their own dtype), a KV cache of the context for
    a generative model (the worker generates one sequence at a time, in the weights' dtype), and
    activations: the logits of a prompt chunk, or an encoder batch's hidden states."""
    t = record.transformers
    weights = t.weight_bytes or _main_weights(record)
    width = 4 if t.dtype == "F32" else 2
    if record.kind in (assets_pb2.MODEL_KIND_EMBEDDING, assets_pb2.MODEL_KIND_RERANKER) \
            or mode in (run_spec_pb2.MODE_EMBEDDINGS, run_spec_pb2.MODE_RERANK):
        n_ctx = min(t.context_length or 512, ENCODER_MAX_TOKENS)
        # Attention scores of one layer (heads x n x n) and a few hidden-state copies per input.
        per_input = n_ctx * n_ctx * max(1, t.num_heads) * 4 + n_ctx * max(1, t.hidden_size) * 4 * 8
        return MemoryEstimate(weights=weights, kv_cache=0, overhead=_TORCH_BASE + per_input * _ENCODER_BATCH // 4)
    n_ctx = context_window(record, context_length)
    head_dim = t.hidden_size // t.num_heads if t.num_heads else 0
    kv = 2 * t.num_layers * n_ctx * (t.num_kv_heads or t.num_heads) * head_dim * width
    if not kv:
        kv = weights // 10
    # The worker keeps the logits of the last position only (a large vocabulary's: ~1 MiB), and
    # evaluates a prompt in one pass: its hidden states and MLP activations per token.
    overhead = _TORCH_BASE + _LOGITS + t.hidden_size * 4 * n_ctx * 12
    return MemoryEstimate(weights=weights, kv_cache=kv, overhead=overhead)


_TRAIN_BASE = 640 << 20  # interpreter, torch, transformers, peft


def _estimate_training(record: assets_pb2.InstallRecord) -> MemoryEstimate:
    # The trainer loads the base in float32 on the CPU (twice a 16-bit checkpoint's bytes; a
    # GPU's bf16 needs less, counted the same: the device is chosen after this estimate). LoRA
    # weights and their AdamW state are a few MB at the usual ranks; activations and gradients
    # through the frozen layers of a batch of short examples: half the loaded weights.
    loaded = 2 * _main_weights(record)
    return MemoryEstimate(weights=loaded, kv_cache=0, overhead=_TRAIN_BASE + loaded // 2)
