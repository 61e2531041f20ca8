"""Output plans compiled to llama.cpp grammars, safely.

The schema has passed schema_guard. The Python converter (llama-cpp-python's
json_schema_to_gbnf) then runs under a deadline, and its GBNF is parsed once by llama.cpp here:
a grammar llama.cpp refuses (an escape it does not know, a left recursion) is a NULL sampler,
and a NULL in a sampling chain is a SIGSEGV in the next token. Parsed here, a refusal is a 400
before the request reaches the engine, which makes each sequence its own grammar sampler from
the text (a grammar's parse state is per sequence).
"""

from __future__ import annotations

from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.runtimes.api.chat_template import TemplateTimeout, run_with_deadline
from ohmygpu.runtimes.llamacpp.structured import OutputPlan

MAX_GBNF = 1 << 20  # characters of generated grammar; the guard's bounds keep real ones far below


def compile_grammar(plan: OutputPlan, vocab: Any, *, timeout_s: float) -> str | None:
    """The GBNF (root rule `root`) enforcing `plan`, or None; raises InvalidArgument when it
    cannot be built or llama.cpp would refuse it."""
    from llama_cpp import llama_grammar

    if plan.schema is None and not plan.any_json:
        return None
    param = "tools" if plan.function_name or plan.mode.value.startswith("tool") else "response_format"
    if plan.schema is None:
        text = llama_grammar.JSON_GBNF
    else:
        import json

        try:
            text = run_with_deadline(lambda: llama_grammar.json_schema_to_gbnf(json.dumps(plan.schema)),
                                     timeout_s)
        except TemplateTimeout:
            raise InvalidArgument(f"the JSON schema took longer than {timeout_s:g}s to compile",
                                  param=param) from None
        except (AssertionError, ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
            raise InvalidArgument(f"cannot enforce this JSON schema: {_reason(e)}", param=param) from None
        if len(text) > MAX_GBNF:
            raise InvalidArgument("the JSON schema compiles to a grammar too large to enforce", param=param)
    check_gbnf(text, vocab, param=param)
    return text


def check_gbnf(text: str, vocab: Any, *, param: str) -> None:
    """Raise InvalidArgument unless llama.cpp parses `text` as a grammar with a root rule."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise InvalidArgument("cannot enforce this JSON schema: llama.cpp refused the grammar it "
                              "compiles to (unsupported pattern syntax?)", param=param)
    llama_cpp.llama_sampler_free(sampler)


def _reason(e: Exception) -> str:
    # The converter's messages name the schema's parts; keep them, without the exception class.
    text = str(e).split("\n")[0][:200]
    return text or "the schema uses a construct the grammar compiler does not support"
