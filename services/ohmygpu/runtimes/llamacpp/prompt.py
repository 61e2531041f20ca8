"""A conversation made into prompt tokens that fit the context window.

Two policies, chosen per request (ChatRequest.truncate):
- refuse (OpenAI): a prompt that does not fit is ContextLengthExceeded, found without
  tokenizing more than the window's worth of text;
- truncate (Ollama's default): older turns go first, the system messages and the latest turn
  stay; when those alone do not fit, the longest of their texts are cut (the latest message
  keeps its end, a system message its beginning), never the template's markup.

Every render goes through the sandboxed template with user strings escaped (tokenize.py), and
every tokenization stops at the budget, so the work is bounded by the window, not the input.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ohmygpu.core.errors import ContextLengthExceeded, InvalidArgument
from ohmygpu.runtimes.llamacpp.tokenize import Tokenizer, TooManyTokens

Render = Callable[[list[dict[str, Any]]], str]  # escaped messages -> prompt text


def answer_room(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens a truncated prompt leaves for the answer: max_tokens when set, at most a quarter
    of the window; else an eighth of it."""
    if max_tokens:
        return max(1, min(max_tokens, n_ctx // 4))
    return max(1, n_ctx // 8)


class PromptBuilder:
    """Renders and tokenizes one request's conversation against a budget."""

    def __init__(self, tokenizer: Tokenizer, render: Render, *, n_ctx: int,
                 cancelled: threading.Event | None = None) -> None:
        self.tok = tokenizer
        self.render = render
        self.n_ctx = n_ctx
        self.cancelled = cancelled

    def _encode(self, messages: list[dict[str, Any]], limit: int) -> list[int]:
        prompt = self.render([self.tok.escape(m) for m in messages])
        return self.tok.encode(prompt, limit=limit, cancelled=self.cancelled)

    def build(self, messages: list[dict[str, Any]], *, truncate: bool, max_tokens: int | None) -> list[int]:
        """Prompt tokens; raises ContextLengthExceeded (refuse, or even the markup too long),
        TemplateFailed, tokenize.Cancelled."""
        hard = self.n_ctx - 1  # at least one token of answer
        try:
            return self._encode(messages, hard)
        except TooManyTokens as e:
            if not truncate:
                raise ContextLengthExceeded(
                    f"the prompt has more than {e.count - 1} tokens, more than this model's context "
                    f"window of {self.n_ctx} tokens; shorten the messages") from None
        target = max(1, self.n_ctx - answer_room(self.n_ctx, max_tokens))
        last = len(messages) - 1
        droppable = [i for i, m in enumerate(messages[:last]) if m.get("role") != "system"]

        def without(k: int) -> list[dict[str, Any]]:  # the k oldest droppable turns dropped
            gone = set(droppable[:k])
            return [m for i, m in enumerate(messages) if i not in gone]

        def fits(k: int) -> list[int] | None:
            try:
                return self._encode(without(k), target)
            except TooManyTokens:
                return None

        # The fewest old turns to drop (binary search: renders grow with the turns kept).
        lo, hi = 1, len(droppable)
        best: list[int] | None = None
        if droppable and (best := fits(hi)) is not None:
            while lo < hi:
                mid = (lo + hi) // 2
                tokens = fits(mid)
                if tokens is not None:
                    best, hi = tokens, mid
                else:
                    lo = mid + 1
            return best  # the result of fits(lo): hi moves only on success, and lo ends at hi
        return self._cut(without(len(droppable)), target)

    def _cut(self, kept: list[dict[str, Any]], target: int) -> list[int]:
        """System messages and the latest turn, their texts cut to fit `target` tokens."""
        blank = [{**m, "content": ""} for m in kept]
        try:
            markup = len(self._encode(blank, target))
        except TooManyTokens:
            raise ContextLengthExceeded(
                f"even without the messages' text, the prompt (the model's chat template, system "
                f"prompt markup and tools) needs more than this model's context window of "
                f"{self.n_ctx} tokens") from None
        # Texts escaped and counted as the prompt will count them (special texts as plain text).
        texts = [self.tok.escape(m.get("content") or "") for m in kept]
        sizes = []
        for text in texts:
            try:
                sizes.append(len(self.tok.encode(text, limit=target, cancelled=self.cancelled)))
            except TooManyTokens as e:
                sizes.append(e.count)
        room = target - markup
        for _ in range(4):
            if room <= 0:
                break
            cap = _water_level(sizes, room)
            cut = []
            for i, (m, text, size) in enumerate(zip(kept, texts, sizes)):
                if size <= cap:
                    cut.append(m)
                    continue
                latest = i == len(kept) - 1
                # A token is rarely over 64 characters: the head is found in text[:cap * 64].
                tokens = self.tok.encode_tail(text, cap, specials=True) if latest else \
                    self.tok.encode(text[:cap * 64], limit=1 << 62)[:cap]
                cut.append({**m, "content": self.tok.decode(tokens)})
            try:
                return self._encode(cut, target)
            except TooManyTokens as e:
                room -= 2 * (e.count - target) + 16  # token seams of the cut texts: try shorter
        raise InvalidArgument("the prompt could not be fitted into the context window", param="messages")


def _water_level(sizes: list[int], room: int) -> int:
    """The largest cap c with sum(min(s, c)) <= room: the longest texts are cut first."""
    lo, hi = 0, max(sizes, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(s, mid) for s in sizes) <= room:
            lo = mid
        else:
            hi = mid - 1
    return lo
