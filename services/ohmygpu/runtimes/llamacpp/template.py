"""Chat templates from model files, rendered in a sandbox and under a deadline.

A template is code from a downloaded file (llama-cpp-python CVE-2024-34359 ran one). It is
rendered with Jinja's immutable sandbox, which blocks attribute tricks but not loops, so the
render also runs under a deadline: when it passes, a TemplateTimeout is raised inside the
rendering thread (templates compile to Python, so the exception lands between bytecodes).
"""

from __future__ import annotations

import ctypes
import datetime
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ohmygpu.core.errors import InvalidArgument

T = TypeVar("T")
_MAX_OUTPUT = 16 << 20  # a template that writes more than 16 MiB of prompt is broken or hostile


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
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, indent=indent,
                                                                      ensure_ascii=False)
        try:
            self._template = env.from_string(source)
        except TemplateError as e:
            raise TemplateFailed(f"the model's chat template does not compile: {e}") from e
        self.source = source
        self.supports_tools = "tools" in source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.timeout_s = timeout_s

    def render(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt for `messages`; raises TemplateFailed on error, timeout or huge output."""
        variables: dict[str, Any] = {
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        if tools:
            variables["tools"] = tools
        try:
            out = run_with_deadline(lambda: self._template.render(**variables), self.timeout_s)
        except TemplateTimeout as e:
            raise TemplateFailed(
                f"the model's chat template took longer than {self.timeout_s:g}s to render"
            ) from e
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as e:
            raise TemplateFailed(f"the model's chat template failed: {e}") from e
        if len(out) > _MAX_OUTPUT:
            raise TemplateFailed("the model's chat template produced an oversized prompt")
        return out


# Used when a GGUF has no template: ChatML, which most small instruct models were tuned on.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
