"""Chat templates from model files, rendered in a sandbox and under a deadline.

A template is code from a downloaded file (llama-cpp-python CVE-2024-34359 ran one). It is
rendered with Jinja's immutable sandbox, which blocks attribute tricks but not loops, so the
render also runs under a deadline: when it passes, a TemplateTimeout is raised inside the
rendering thread (templates compile to Python, so the exception lands between bytecodes).
Its output is bounded while it is produced (a template asked for 1 GiB of prompt gave a
MemoryError), string and list `*` and `+` are checked before they build something huge, and
every failure (a syntax error, macro recursion, memory) is one TemplateFailed that says what
went wrong without Python's exception class names.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from jinja2 import TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ohmygpu.core.capabilities import template_handles_tools, template_thinks
from ohmygpu.core.errors import InvalidArgument

T = TypeVar("T")
_MAX_OUTPUT = 16 << 20  # a template that writes more than 16 MiB of prompt is broken or hostile


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `+` on strings and lists bounded in size."""

    intercepted_binops = frozenset({"*", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            seq, times = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                    and len(seq) * max(0, times) > _MAX_OUTPUT:
                raise TemplateError("the template builds a value larger than 16 MiB")
        result = super().call_binop(context, operator, left, right)
        if operator == "+" and isinstance(result, (str, list, tuple)) and len(result) > _MAX_OUTPUT:
            raise TemplateError("the template builds a value larger than 16 MiB")
        return result


class TemplateTimeout(Exception):
    """Raised inside a render that ran past its deadline."""


class TemplateFailed(InvalidArgument):
    """The model's chat template failed on these messages."""


def run_with_deadline(fn: Callable[[], T], timeout_s: float) -> T:
    """Run fn in this thread; raise TemplateTimeout in it if it runs longer than timeout_s."""
    target = threading.get_ident()
    lock = threading.Lock()
    finished = False

    def fire() -> None:
        with lock:
            if not finished:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(TemplateTimeout)
                )

    timer = threading.Timer(timeout_s, fire)
    timer.daemon = True
    timer.start()
    try:
        return fn()
    finally:
        with lock:
            finished = True
        timer.cancel()


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template with the variables Hugging Face templates expect."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, timeout_s: float) -> None:
        env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, indent=indent,
                                                                      ensure_ascii=False)
        try:
            self._template = env.from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateFailed(f"the model's chat template failed: it does not compile (line {e.lineno}: "
                                 f"{e.message})") from None
        except (TemplateError, RecursionError, MemoryError, ValueError, TypeError) as e:
            raise TemplateFailed(f"the model's chat template failed: it does not compile ({_describe(e)})") from None
        self.source = source
        self.supports_tools = template_handles_tools(source)  # the rule /api/show reports too
        self.thinks = template_thinks(source)  # likewise
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.timeout_s = timeout_s

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True, enable_thinking: bool | None = None) -> str:
        """The prompt for `messages`; raises TemplateFailed on error, timeout or huge output.
        `enable_thinking` is Qwen3's switch (templates without it ignore it); None leaves it
        undefined, the template's own default."""
        variables: dict[str, Any] = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if tools:
            variables["tools"] = tools
        if enable_thinking is not None:
            variables["enable_thinking"] = enable_thinking
        try:
            return run_with_deadline(lambda: self._bounded_render(variables), self.timeout_s)
        except TemplateTimeout:
            raise TemplateFailed(
                f"the model's chat template failed: it took longer than {self.timeout_s:g}s to render"
            ) from None
        except TemplateFailed:
            raise
        except Exception as e:  # noqa: BLE001 - code from a model file can raise anything
            raise TemplateFailed(f"the model's chat template failed: {_describe(e)}") from None

    def _bounded_render(self, variables: dict[str, Any]) -> str:
        parts: list[str] = []
        size = 0
        for piece in self._template.generate(**variables):
            size += len(piece)
            if size > _MAX_OUTPUT:
                raise TemplateFailed("the model's chat template failed: it produced more than 16 MiB of prompt")
            parts.append(piece)
        return "".join(parts)


def _describe(e: BaseException) -> str:
    """What went wrong in a template, in words (no exception class names)."""
    if isinstance(e, RecursionError):
        return "it recursed too deeply"
    if isinstance(e, MemoryError):
        return "it ran out of memory"
    text = str(e).split("\n")[0][:200]
    return text or "it raised an error"


# Used when a GGUF has no template: ChatML, which most small instruct models were tuned on.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
