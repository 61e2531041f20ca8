"""Opening a GGUF in llama.cpp and reading what the worker needs of its text side: the model,
then its tokenizer and chat template (a template that does not compile fails chats with its
reason, not the load: embeddings and raw completions still work)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.chat_template import CHATML, ChatTemplate, TemplateFailed
from ohmygpu.runtimes.llamacpp.tokenize import Tokenizer, from_llama

log = logging.getLogger("ohmygpu.worker.llamacpp")
DEFAULT_TEMPLATE_TIMEOUT_S = 2.0


def open_model(path: str, n_ctx: int, gpu_layers: int, embedding: bool, threads: int,
               lora: str = "") -> Any:
    """A llama_cpp.Llama over `path` (call it on the thread that will use it: see engine.py),
    with the GGUF LoRA adapter `lora` applied when given (the engine applies it to its own
    context too: see engine.apply_lora)."""
    import llama_cpp

    _skip_library_templates()
    kwargs: dict[str, Any] = {"lora_path": lora} if lora else {}
    if embedding:
        # One micro-batch holds a whole input (non-causal encoders need that); inputs share
        # the context as parallel sequences, so a batch of short texts is one decode.
        kwargs.update(embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                      n_batch=n_ctx, n_ubatch=n_ctx)
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads,
                           n_threads_batch=threads, n_gpu_layers=gpu_layers,
                           verbose=False, **kwargs)


@dataclass
class TextSide:
    """The loaded model's tokenizer and chat template (or why the template cannot be used)."""

    tokenizer: Tokenizer
    template: ChatTemplate | None
    error: TemplateFailed | None
    template_timeout: float


def prepare_text(llm: Any, spec: run_spec_pb2.RunSpec, template: str = "") -> TextSide:
    """Tokenizer and chat template of `llm`, with the spec's template deadline: `template` (a
    derived model's, core/derived.py) instead of the file's own when given."""
    template_src = template or llm.metadata.get("tokenizer.chat_template") or CHATML
    vocab = llm._model
    n_vocab = llm.n_vocab()
    bos = vocab.token_get_text(llm.token_bos()) if 0 <= llm.token_bos() < n_vocab else ""
    eos = vocab.token_get_text(llm.token_eos()) if 0 <= llm.token_eos() < n_vocab else ""
    timeout = DEFAULT_TEMPLATE_TIMEOUT_S
    if "template_timeout_s" in spec.extensions:
        timeout = float(spec.extensions["template_timeout_s"].number_value or DEFAULT_TEMPLATE_TIMEOUT_S)
    try:
        template = ChatTemplate(template_src, bos_token=bos, eos_token=eos, timeout_s=timeout)
    except TemplateFailed as e:
        log.error("%s", e.message)
        return TextSide(from_llama(llm), None, e, timeout)
    return TextSide(from_llama(llm), template, None, timeout)


class _NoTemplate:
    """Stands in for llama-cpp-python's Jinja2ChatFormatter, which `Llama()` builds for every
    template in the file at load: a template with a syntax error failed the whole load there, and
    its compile had no deadline. We never use those handlers (runtimes/api/chat_template.py
    renders, sandboxed and bounded), so none is built."""

    def __init__(self, **_: Any) -> None:
        pass

    def to_chat_handler(self) -> None:
        return None


def _skip_library_templates() -> None:
    from llama_cpp import llama as llama_module

    llama_module.llama_chat_format.Jinja2ChatFormatter = _NoTemplate  # type: ignore[attr-defined,misc]
