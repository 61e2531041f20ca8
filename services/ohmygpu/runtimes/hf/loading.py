"""Opening a Hugging Face format folder with transformers (or sentence-transformers), on the
device the daemon placed it: a causal LM with its tokenizer and chat template, an embedding
model, a cross-encoder, or a PEFT LoRA adapter over its base.

Only safetensors weights are read (`use_safetensors=True`: a pickle is never unpickled), no code
from the folder runs (`trust_remote_code=False`), and nothing is downloaded (`local_files_only`;
the worker's environment has HF_HUB_OFFLINE=1 too). Chat templates are rendered by the same
sandboxed, deadline-bound renderer as the llama.cpp worker's (runtimes/api/chat_template.py),
never by transformers' own, which has no deadline.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument, InvalidModelFile
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtimes.api.chat_template import CHATML, ChatTemplate, TemplateFailed

log = logging.getLogger("ohmygpu.worker.transformers")
DEFAULT_TEMPLATE_TIMEOUT_S = 2.0
_DTYPES = ("float32", "bfloat16", "float16")
_MARK_BASE = 0xF0000  # Supplementary Private Use Area-A: markers for special-token texts in user content


def model_folder(record: assets_pb2.InstallRecord) -> Path:
    """The folder a record's files are in (its config.json's, else its first file's): a local
    add's own directory, a pull's snapshot directory."""
    for a in record.artifacts:
        if a.filename in ("config.json", "adapter_config.json") and a.local_path:
            return Path(a.local_path).parent
    for a in record.artifacts:
        if a.local_path:
            return Path(a.local_path).parent
    raise InvalidArgument(f"model '{record.name}' has no local files to load")


def device_of(spec: run_spec_pb2.RunSpec) -> str:
    """The torch device the spec places the model on ("cpu", "cuda:N"); raises InvalidArgument
    for a GPU this build of torch cannot use."""
    import torch

    device = spec.resources.device or "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidArgument(f"device {device} was asked for, but this torch has no CUDA")
        return device if ":" in device else "cuda:0"
    return "cpu"


def dtype_of(spec: run_spec_pb2.RunSpec) -> Any:
    """The dtype weights are loaded in: the spec's `dtype` extension, else the checkpoint's own
    ("auto": a bf16 checkpoint stays bf16, which the estimate counts)."""
    import torch

    ext = spec.extensions
    name = ext["dtype"].string_value if "dtype" in ext else ""
    if not name or name == "auto":
        return "auto"
    if name not in _DTYPES:
        raise InvalidArgument(f"dtype '{name}' is not one of auto, {', '.join(_DTYPES)}", param="dtype")
    return getattr(torch, name)


_SAFE = {"local_files_only": True, "trust_remote_code": False}


def _from_pretrained(cls: Any, folder: Path, dtype: Any) -> Any:
    """`cls.from_pretrained` of safetensors only, refusing weights that are missing: transformers
    fills a tensor the files lack with random values and only warns, and a damaged or truncated
    checkpoint must not answer with noise."""
    model, info = cls.from_pretrained(folder, dtype=dtype, use_safetensors=True, output_loading_info=True, **_SAFE)
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise InvalidModelFile(f"the model's weights lack {len(missing)} tensor(s) its config needs "
                               f"({', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''})")
    return model


def open_causal_lm(folder: Path, device: str, dtype: Any, adapter: Path | None = None) -> Any:
    """A causal LM in eval mode on `device`; with `adapter`, a PEFT LoRA adapter folder applied
    over it (merged into the weights: the same answers, no adapter cost per token)."""
    from transformers import AutoModelForCausalLM

    model = _from_pretrained(AutoModelForCausalLM, folder, dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=False, local_files_only=True)
        model = model.merge_and_unload()
    return model.to(device).eval()


def open_tokenizer(*folders: Path) -> Any:
    """The tokenizer of the first folder that has one (an adapter's own, else its base's)."""
    from transformers import AutoTokenizer

    for folder in folders:
        if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(folder, **_SAFE)
    raise InvalidArgument("the model has no tokenizer (tokenizer.json or tokenizer_config.json)")


def open_encoder(folder: Path, device: str, dtype: Any) -> Any:
    """A plain encoder (AutoModel), for embeddings by mean pooling."""
    from transformers import AutoModel

    return _from_pretrained(AutoModel, folder, dtype).to(device).eval()


def open_sentence_transformer(folder: Path, device: str) -> Any:
    """A sentence-transformers model: its modules.json decides pooling and normalisation."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device=device, local_files_only=True, trust_remote_code=False,
                               model_kwargs={"use_safetensors": True})


def open_cross_encoder(folder: Path, device: str, dtype: Any) -> Any:
    """A cross-encoder's sequence classification head (its logit is the relevance)."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(AutoModelForSequenceClassification, folder, dtype).to(device).eval()


def template_timeout(spec: run_spec_pb2.RunSpec) -> float:
    ext = spec.extensions
    if "template_timeout_s" in ext:
        return float(ext["template_timeout_s"].number_value or DEFAULT_TEMPLATE_TIMEOUT_S)
    return DEFAULT_TEMPLATE_TIMEOUT_S


def chat_template(tokenizer: Any, derived: str, timeout_s: float) -> tuple[ChatTemplate | None, TemplateFailed | None]:
    """The template chats render: a derived model's, else the tokenizer's, else ChatML. One that
    does not compile fails chats with its reason, not the load."""
    source = derived or getattr(tokenizer, "chat_template", None) or CHATML
    if isinstance(source, dict):  # several named templates
        source = source.get("default") or next(iter(source.values()))
    try:
        return ChatTemplate(source, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "",
                            timeout_s=timeout_s), None
    except TemplateFailed as e:
        log.error("%s", e.message)
        return None, e


@dataclass
class SpecialEscaper:
    """Keeps request text from becoming control tokens: each special token's text in a message
    ("<|im_end|>") is replaced by a private-use marker before the template renders, and the
    rendered prompt is tokenized piece by piece, markers as the plain text they stand for. Only
    the template's own markup yields special tokens."""

    tokenizer: Any
    specials: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        texts = {t for t in getattr(self.tokenizer, "all_special_tokens", []) if t}
        for token in getattr(self.tokenizer, "added_tokens_decoder", {}).values():
            if getattr(token, "special", False) and token.content:
                texts.add(token.content)
        self.specials = sorted(texts, key=len, reverse=True)[: 0x10000 - 2]
        self._find = re.compile("|".join(re.escape(t) for t in self.specials)) if self.specials else None
        self._index = {t: i for i, t in enumerate(self.specials)}
        self._marks = re.compile(f"([{chr(_MARK_BASE)}-{chr(_MARK_BASE + max(0, len(self.specials) - 1))}])")

    def escape(self, text: str) -> str:
        if self._find is None:
            return text
        return self._find.sub(lambda m: chr(_MARK_BASE + self._index[m.group(0)]), text)

    def encode(self, rendered: str) -> list[int]:
        """Token ids of a rendered prompt: markup parsed for special tokens, markers as text."""
        tok = self.tokenizer
        if self._find is None:
            return list(tok.encode(rendered, add_special_tokens=False))
        ids: list[int] = []
        for i, part in enumerate(self._marks.split(rendered)):
            if not part:
                continue
            if i % 2:  # a marker: the special token's text, tokenized as text
                text = self.specials[ord(part) - _MARK_BASE]
                ids += tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            else:
                ids += tok.encode(part, add_special_tokens=False)
        return ids
