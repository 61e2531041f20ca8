"""Whether a GGUF file can load, checked cheaply when it is added (or pulled), from its header.

A hostile or damaged file (truncated, tensors of absurd shapes or past the end, an alignment of
0 or 3, an unknown architecture or tokenizer, special tokens outside the vocabulary, a context
of 2^32-1, a chat template that does not compile) is refused with "the file is not a loadable
model: ...", before any request finds out the hard way. Nothing here reads tensor data, and the
template, which is untrusted, is compiled (never rendered) in a short-lived child process with a
time and memory bound. The worker stays the real boundary: this only catches the cheap cases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from ohmygpu.core.errors import UnloadableModel
from ohmygpu.core.gguf import GgufHeader, read_header
from ohmygpu.core.names import shard_names

# ggml type id -> (elements per block, bytes per block), as ggml defines them
# (tests/unit/test_gguf_hostile.py checks this table against llama.cpp's gguf package).
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}

# ggml type id -> the name users know (tensor types, as `omg model info` shows a diffusion GGUF's).
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS",
    24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0",
    35: "TQ2_0", 39: "MXFP4",
}

# Architectures llama.cpp loads (its LLM_ARCH names; `clip` projectors are not models).
ARCHITECTURES = frozenset("""
afmoe apertus arcee arctic arwkv7 baichuan bailingmoe bailingmoe2 bert bitnet bloom chameleon
chatglm codeshell cogvlm cohere2 command-r dbrx deci deepseek deepseek2 deepseek2-ocr dots1 dream
ernie4_5 ernie4_5-moe eurobert exaone exaone-moe exaone4 falcon falcon-h1 gemma gemma-embedding
gemma2 gemma3 gemma3n gemma4 glm-dsa glm4 glm4moe gpt-oss gpt2 gptj gptneox granite granitehybrid
granitemoe grok grovemoe hunyuan-dense hunyuan-moe hunyuan_vl internlm2 jais jais2 jamba
jina-bert-v2 jina-bert-v3 kimi-linear lfm2 lfm2moe llada llada-moe llama llama-embed llama4
maincoder mamba mamba2 mimo2 minicpm minicpm3 minimax-m2 mistral3 mistral4 modern-bert mpt
nemotron nemotron_h nemotron_h_moe neo-bert nomic-bert nomic-bert-moe olmo olmo2 olmoe openelm
orion paddleocr pangu-embedded phi2 phi3 phimoe plamo plamo2 plamo3 plm qwen qwen2 qwen2moe
qwen2vl qwen3 qwen35 qwen35moe qwen3moe qwen3next qwen3vl qwen3vlmoe refact rnd1 rwkv6 rwkv6qwen2
rwkv7 seed_oss smallthinker smollm3 stablelm starcoder starcoder2 step35 t5 t5encoder
wavtokenizer-dec xverse
""".split())
TOKENIZERS = frozenset({"llama", "gpt2", "bert", "t5", "rwkv", "ugm", "plamo2", "no_vocab", "none"})

_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ALIGNMENT = 1 << 20
_MAX_CONTEXT = 1 << 26  # 64 Mi tokens; the largest real context is ~10 M
_MAX_SIZE_VALUE = 1 << 20  # embedding length, layers, heads
_TEMPLATE_TIMEOUT_S = 10.0
_TEMPLATE_MEMORY = 1 << 30
_compiled: dict[str, str] = {}  # sha256 of a template -> "" (compiles) or why not


def _refuse(why: str) -> UnloadableModel:
    return UnloadableModel(f"the file is not a loadable model: {why}")


def check_loadable(header: GgufHeader, path: Path) -> None:
    """Raise UnloadableModel when the model whose first (or only) file is `path`, with `header`
    as read_model_header gave it, cannot load. Parts of a split model get the tensor checks too."""
    _check_metadata(header)
    check_tensors(header, path)
    template = header.metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template:
        why = compile_error(template)
        if why:
            raise _refuse(f"its chat template does not compile: {why}")


def check_tensors(header: GgufHeader, path: Path) -> None:
    """Raise UnloadableModel when the tensor table of the GGUF at `path` (and of its other parts)
    cannot be read as it says. All a diffusion GGUF gets: llama.cpp's metadata rules are an LLM's."""
    if not _int_in(header.alignment, 1, _MAX_ALIGNMENT) or header.alignment & (header.alignment - 1):  # type: ignore[operator]
        raise _refuse(f"tensor alignment {str(header.alignment)[:30]} is not a power of two up to "
                      f"{_MAX_ALIGNMENT}")
    _check_tensors(header)
    for name in shard_names(path.name, header.shards)[1:] if header.shards > 1 else []:
        _check_tensors(read_header(path.with_name(name), display_name=name), part=name)


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_metadata(header: GgufHeader) -> None:
    arch = header.metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise _refuse("it names no architecture (general.architecture)")
    if arch not in ARCHITECTURES:
        raise _refuse(f"unknown architecture {arch[:60]!r}")
    tokenizer = header.metadata.get("tokenizer.ggml.model")
    if tokenizer is not None and tokenizer not in TOKENIZERS:
        raise _refuse(f"unknown tokenizer {str(tokenizer)[:60]!r}")
    context = header.arch_value("context_length")
    if context is not None and not _int_in(context, 1, _MAX_CONTEXT):
        raise _refuse(f"context length {str(context)[:30]} is out of range (1 to {_MAX_CONTEXT})")
    for key in ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv"):
        value = header.arch_value(key)
        # head_count_kv may be an array (one per layer); its items are not checked here.
        if value is not None and not isinstance(value, list) and not _int_in(value, 0 if "kv" in key else 1,
                                                                             _MAX_SIZE_VALUE):
            raise _refuse(f"{key.replace('attention.', '')} {str(value)[:30]} is out of range")
    vocab = header.array_lengths.get("tokenizer.ggml.tokens")
    for role in ("bos", "eos", "eot"):
        token = header.metadata.get(f"tokenizer.ggml.{role}_token_id")
        if token is not None and not _int_in(token, 0, (vocab or 1 << 32) - 1):
            raise _refuse(f"its {role} token id {str(token)[:30]} is outside the vocabulary"
                          + (f" ({vocab} tokens)" if vocab else ""))


def _check_tensors(header: GgufHeader, part: str = "") -> None:
    where = f" (in part {part})" if part else ""
    if not header.tensors and not part:
        raise _refuse("it holds no tensors")
    align = header.alignment if isinstance(header.alignment, int) and header.alignment > 0 else 32
    room = header.file_size - header.data_offset  # bytes of tensor data the file holds
    for t in header.tensors:
        if not 1 <= len(t.dims) <= _MAX_DIMS:
            raise _refuse(f"tensor {t.name!r}{where} has {len(t.dims)} dimensions")
        if min(t.dims) < 1:
            raise _refuse(f"tensor {t.name!r}{where} has a dimension of 0")
        if t.ggml_type not in GGML_TYPES:
            raise _refuse(f"tensor {t.name!r}{where} has unknown type {t.ggml_type}")
        block, block_bytes = GGML_TYPES[t.ggml_type]
        if t.dims[0] % block:
            raise _refuse(f"tensor {t.name!r}{where}: a row of {t.dims[0]} is not whole blocks of {block}")
        if t.offset % align:
            raise _refuse(f"tensor {t.name!r}{where} is not aligned to {align} bytes")
        elements = 1
        for d in t.dims:
            elements *= d
        size = elements // block * block_bytes
        if t.offset + size > room:
            raise _refuse(f"tensor {t.name!r}{where} lies past the end of the file (truncated, or a "
                          "shape or offset that does not fit)")


# The child: compile in the sandbox the llama.cpp worker renders with (same options), print why
# not on failure. Bounded in memory here and in time by the parent.
_COMPILE = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (%d, %d))
from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
source = sys.stdin.buffer.read().decode("utf-8", "replace")
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
try:
    env.from_string(source)
except TemplateSyntaxError as e:
    print(f"{e.message} (line {e.lineno})"[:300]); sys.exit(3)
except (RecursionError, MemoryError):
    print("it is too deeply nested or too large to compile"); sys.exit(3)
""" % (_TEMPLATE_MEMORY, _TEMPLATE_MEMORY)


def compile_error(template: str, *, timeout_s: float = _TEMPLATE_TIMEOUT_S) -> str:
    """Why `template` does not compile in the chat-template sandbox ("" when it does, or when
    Jinja is not installed here: the worker, which needs it, then says so itself)."""
    key = hashlib.sha256(template.encode("utf-8", "replace")).hexdigest()
    if key in _compiled:
        return _compiled[key]
    if importlib.util.find_spec("jinja2") is None:
        return ""
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _COMPILE], input=template.encode("utf-8", "replace"),
                              capture_output=True, timeout=timeout_s, env={"PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        why = f"compiling it took over {timeout_s:.0f} s"
    else:
        if done.returncode == 0:
            why = ""
        elif done.returncode == 3:
            why = done.stdout.decode("utf-8", "replace").strip() or "a syntax error"
        else:
            why = "the compiler failed on it (too large or too deeply nested?)"
    _compiled[key] = why
    return why
