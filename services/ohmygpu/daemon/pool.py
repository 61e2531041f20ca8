"""The worker pool: which worker serves which (model, mode), and the mode a request runs in.

A model has at most one worker per mode: an LLM's chat worker (which also serves raw completion)
and, beside it, an embeddings worker (llama.cpp's embedding mode cannot generate). Keys are
(model, mode) values, never strings with a suffix: "every key of model m" is a field match, and
unloading one key cannot silently remove another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.kinds import kind_name
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.run.v1 import run_spec_pb2

_NATURAL_MODE = {
    assets_pb2.MODEL_KIND_LLM: run_spec_pb2.MODE_CHAT,
    assets_pb2.MODEL_KIND_UNSPECIFIED: run_spec_pb2.MODE_CHAT,  # records from before kinds
    assets_pb2.MODEL_KIND_EMBEDDING: run_spec_pb2.MODE_EMBEDDINGS,
    assets_pb2.MODEL_KIND_WHISPER: run_spec_pb2.MODE_TRANSCRIPTION,
    assets_pb2.MODEL_KIND_IMAGE: run_spec_pb2.MODE_IMAGE,
    assets_pb2.MODEL_KIND_TTS: run_spec_pb2.MODE_SPEECH,
    assets_pb2.MODEL_KIND_RERANKER: run_spec_pb2.MODE_RERANK,
    assets_pb2.MODEL_KIND_ADAPTER: run_spec_pb2.MODE_CHAT,  # served as its base with the adapter applied
}
# How a worker beside the model's own mode is labelled in events, logs and errors.
_LABEL = {run_spec_pb2.MODE_EMBEDDINGS: "embeddings", run_spec_pb2.MODE_CHAT: "chat",
          run_spec_pb2.MODE_TRAINING: "training"}


@dataclass(frozen=True)
class WorkerKey:
    """One worker's place in the pool: the model and the mode it serves (chat covers completion)."""

    model: str
    mode: int
    # Not the model's own mode (an LLM loaded for embeddings): only changes the label.
    secondary: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        """The label events' subjects and messages use: the model name, "m#embeddings" for a
        second worker ('#' is never part of a model name)."""
        return f"{self.model}#{_LABEL.get(self.mode, str(self.mode))}" if self.secondary else self.model


class WorkerPool(dict[WorkerKey, Worker]):
    """The live workers by key."""

    def keys_of(self, model: str) -> list[WorkerKey]:
        """A snapshot of the keys serving `model` (safe to unload while iterating)."""
        return [k for k in self if k.model == model]


def worker_key(record: assets_pb2.InstallRecord, mode: int) -> WorkerKey:
    """The key of the worker serving `record` in `mode` (as check_mode returns it)."""
    natural = _NATURAL_MODE.get(record.kind, run_spec_pb2.MODE_CHAT)
    return WorkerKey(record.name, mode, secondary=mode != natural)


_WHAT = {
    run_spec_pb2.MODE_CHAT: "chat", run_spec_pb2.MODE_COMPLETION: "complete text",
    run_spec_pb2.MODE_EMBEDDINGS: "embed text", run_spec_pb2.MODE_TRANSCRIPTION: "transcribe audio",
    run_spec_pb2.MODE_IMAGE: "generate images", run_spec_pb2.MODE_SPEECH: "speak text",
    run_spec_pb2.MODE_RERANK: "rerank documents", run_spec_pb2.MODE_TRAINING: "train",
}
_A_KIND = {
    assets_pb2.MODEL_KIND_LLM: "an LLM", assets_pb2.MODEL_KIND_EMBEDDING: "an embedding model",
    assets_pb2.MODEL_KIND_WHISPER: "a whisper (speech-to-text) model", assets_pb2.MODEL_KIND_IMAGE: "an image model",
    assets_pb2.MODEL_KIND_TTS: "a text to speech model", assets_pb2.MODEL_KIND_RERANKER: "a reranker",
    assets_pb2.MODEL_KIND_ADAPTER: "a fine-tuned adapter",
}
_USE = {
    assets_pb2.MODEL_KIND_WHISPER: "use it with /v1/audio/transcriptions or `omg transcribe`",
    assets_pb2.MODEL_KIND_EMBEDDING: "use it with /v1/embeddings, /api/embed or `omg embed`",
    assets_pb2.MODEL_KIND_LLM: "use it with /v1/chat/completions, /api/chat or `omg chat`",
    assets_pb2.MODEL_KIND_ADAPTER: "use it with /v1/chat/completions, /api/chat or `omg chat`",
    assets_pb2.MODEL_KIND_TTS: "use it with /v1/audio/speech or `omg say`",
    assets_pb2.MODEL_KIND_RERANKER: "use it with /v1/rerank",
    assets_pb2.MODEL_KIND_IMAGE: "use it with /v1/images/generations or `omg gen image`",
}


def check_complete(record: assets_pb2.InstallRecord) -> None:
    """Raise InvalidArgument when a diffusion model lacks a part generation needs: a FLUX, SD3 or
    Wan GGUF usually holds the denoiser alone, its VAE and text encoders published apart."""
    if not record.HasField("diffusion"):
        return
    d = record.diffusion
    missing = [n for n, present in (("denoiser", d.has_denoiser), ("VAE", d.has_vae),
                                    ("text encoder", d.has_text_encoder)) if not present]
    if missing:
        raise InvalidArgument(
            f"model '{record.name}' is a {d.family} model that lacks its {' and '.join(missing)}: add it "
            "together with the files it lacks (omg model add DIFFUSION_MODEL --part VAE --part TEXT_ENCODER)",
            param="model")


def check_mode(record: assets_pb2.InstallRecord, mode: int) -> int:
    """The mode a request for `record` runs in (unspecified: the model's own); raises
    InvalidArgument naming the model's kind when the model cannot serve `mode`."""
    natural = _NATURAL_MODE.get(record.kind, run_spec_pb2.MODE_CHAT)
    if not mode:
        return natural
    if mode == run_spec_pb2.MODE_COMPLETION:
        mode = run_spec_pb2.MODE_CHAT  # one worker serves chat and raw completion
    # A generative model embeds too (mean-pooled hidden states), as ollama allows.
    if mode == natural or (natural == run_spec_pb2.MODE_CHAT and mode == run_spec_pb2.MODE_EMBEDDINGS):
        if mode == run_spec_pb2.MODE_IMAGE:
            check_complete(record)
        return mode
    kind = _A_KIND.get(record.kind, f"a model of kind {kind_name(record.kind)}")
    use = _USE.get(record.kind, "see `omg model info` for what it is")
    raise InvalidArgument(f"model '{record.name}' is {kind} and cannot {_WHAT.get(mode, 'do that')}; "
                          f"{use}", param="model")
