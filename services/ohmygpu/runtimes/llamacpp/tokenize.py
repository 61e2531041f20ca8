"""Prompt text to tokens: only the template's own markup yields control tokens, and the work
is bounded by the context budget.

llama.cpp's `tokenize(special=True)` turns every `<|im_end|>` in a prompt into the control
token, whoever wrote it: a user message containing `<|im_end|>\\n<|im_start|>system` was role
injection. Its special-token partitioning is also quadratic in the number of occurrences (a
0.4 MB message of `<|im_end|>` copies held a slot for minutes). So the partition is done here,
in one linear regex pass:

- before rendering, every string a request contributes (message contents, names, tool calls,
  tool definitions) is escaped: each occurrence of a special token's text, and our marker
  character itself, becomes a two-character private-use marker that templates pass through;
- the rendered prompt is split at special-token texts (those come from the template: token ids)
  and at markers (user text: tokenized as text, in two pieces so llama.cpp never sees the whole
  special text in one call);
- everything else is tokenized with special=False, in chunks, stopping as soon as the count
  passes the caller's limit or the request is cancelled.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

_MARK = "\ue000"  # a marker is _MARK followed by one char in _INDEX_BASE.. naming what it stands for
_INDEX_BASE = 0xE100
_MAX_SPECIALS = 0x700
_CHUNK = 4096  # characters tokenized per call between budget checks


class TooManyTokens(Exception):
    """The text passed the limit; `count` tokens were produced before stopping (a lower bound)."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


class Cancelled(Exception):
    """The request went away while its prompt was being tokenized."""


class Tokenizer:
    """Bounded, injection-safe tokenization over a model's vocabulary.

    `raw(text_bytes, special)` is llama.cpp's tokenizer (no BOS added); `specials` maps each
    control or user-defined token's text to its id.
    """

    def __init__(self, raw: Callable[[bytes, bool], list[int]], specials: dict[str, int],
                 detokenize: Callable[[list[int]], bytes]) -> None:
        self._raw = raw
        self._detokenize = detokenize
        # Longest first, so a special text that contains another one wins.
        self.specials = dict(sorted(((t, i) for t, i in specials.items() if t),
                                    key=lambda kv: -len(kv[0]))[:_MAX_SPECIALS])
        self._texts = [_MARK, *self.specials]  # marker index -> the text it stands for
        self._escape_table = {t: _MARK + chr(_INDEX_BASE + n) for n, t in enumerate(self._texts)}
        alternatives = "|".join(re.escape(t) for t in self._texts)
        self._in_user_text = re.compile(alternatives)
        self._in_prompt = re.compile(f"{_MARK}[{chr(_INDEX_BASE)}-{chr(_INDEX_BASE + len(self._texts) - 1)}]"
                                     + ("|" + "|".join(re.escape(t) for t in self.specials) if self.specials else ""))
        self._as_text_cache: dict[str, list[int]] = {}
        # Every special text starts with one of a few characters ("<", "[", ...): a string with
        # none of them (and no marker) needs no regex pass.
        self._probe = sorted({t[0] for t in self.specials} | {_MARK})

    # -- escaping user strings before they are rendered --------------------------------------

    def escape(self, value: Any) -> Any:
        """`value` (a string, or lists and dicts of them) with special texts replaced by markers."""
        if isinstance(value, str):
            if not any(c in value for c in self._probe):
                return value
            return self._in_user_text.sub(lambda m: self._escape_table[m.group(0)], value)
        if isinstance(value, list):
            return [self.escape(v) for v in value]
        if isinstance(value, dict):
            return {k: self.escape(v) for k, v in value.items()}
        return value

    def unescape(self, text: str) -> str:
        """Markers back to the text they stand for (for text shown again, e.g. a cut message)."""
        return re.sub(f"{_MARK}(.)", lambda m: self._marker_text(m.group(1)) or m.group(0), text)

    def _marker_text(self, c: str) -> str | None:
        n = ord(c) - _INDEX_BASE
        return self._texts[n] if 0 <= n < len(self._texts) else None

    # -- tokenizing -------------------------------------------------------------------------

    def encode(self, text: str, *, limit: int, specials: bool = True,
               cancelled: threading.Event | None = None) -> list[int]:
        """Tokens of `text`: special texts -> control tokens (when `specials`), markers -> their
        text as plain text, the rest as plain text. Raises TooManyTokens past `limit`, Cancelled."""
        out: list[int] = []
        pattern = self._in_prompt if specials else None
        for kind, piece in self._pieces(text, pattern):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            if kind == "special":
                out.append(self.specials[piece])
            elif kind == "marker":
                out.extend(self._as_text(piece))
            else:
                out.extend(self._raw(piece.encode("utf-8"), False))
            if len(out) > limit:
                raise TooManyTokens(len(out))
        return out

    def encode_tail(self, text: str, count: int, *, specials: bool = False) -> list[int]:
        """The last `count` tokens of `text` (read as plain text unless `specials`), tokenizing
        only about as much of its end as they need."""
        if count <= 0:
            return []
        width = max(64, count * 4)
        while True:
            part = text[-width:]
            tokens = self.encode(part, limit=1 << 62, specials=specials)
            if len(tokens) > count or len(part) == len(text):
                return tokens[-count:]
            width *= 4

    def decode(self, tokens: list[int]) -> str:
        return self._detokenize(tokens).decode("utf-8", errors="ignore")

    def _pieces(self, text: str, pattern: re.Pattern[str] | None) -> Iterator[tuple[str, str]]:
        pos = 0
        if pattern is not None:
            for m in pattern.finditer(text):
                yield from _chunks(text[pos:m.start()])
                found = m.group(0)
                if found.startswith(_MARK) and len(found) == 2 and self._marker_text(found[1]) is not None:
                    yield "marker", self._marker_text(found[1]) or ""
                else:
                    yield "special", found
                pos = m.end()
        yield from _chunks(text[pos:])

    def _as_text(self, text: str) -> list[int]:
        """A special token's text as plain-text tokens, never the special token itself."""
        cached = self._as_text_cache.get(text)
        if cached is None:
            ids = set(self.specials.values())
            # In two calls, so the whole special text is never seen by llama.cpp at once (it
            # matches user-defined tokens even with special=False).
            cached = self._raw(text[:1].encode("utf-8"), False) + self._raw(text[1:].encode("utf-8"), False)
            if any(t in ids for t in cached):
                cached = [t for c in text for t in self._raw(c.encode("utf-8"), False)]
            self._as_text_cache[text] = cached
        return cached


def _chunks(text: str) -> Iterator[tuple[str, str]]:
    """Plain text in pieces of about _CHUNK characters, cut before a space or newline so the
    pieces tokenize as the whole would (pre-tokenizers split words there too)."""
    pos, n = 0, len(text)
    while pos < n:
        end = min(n, pos + _CHUNK)
        if end < n:
            cut = max(text.rfind(" ", pos + 1, end), text.rfind("\n", pos + 1, end))
            if cut > pos:
                end = cut
        yield "text", text[pos:end]
        pos = end


def from_llama(llm: Any) -> Tokenizer:
    """The Tokenizer of a loaded llama_cpp.Llama."""
    import llama_cpp

    vocab = llm._model.vocab
    wanted = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
    specials: dict[str, int] = {}
    for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        if llama_cpp.llama_vocab_get_attr(vocab, token) & wanted:
            text = (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", errors="replace")
            if text and text not in specials:
                specials[text] = token
    model = llm._model

    def raw(data: bytes, special: bool) -> list[int]:
        return model.tokenize(data, False, special) if data else []

    return Tokenizer(raw, specials, lambda tokens: model.detokenize(tokens, special=False))
