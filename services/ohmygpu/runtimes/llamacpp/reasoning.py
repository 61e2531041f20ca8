"""A reasoning model's streamed output split into its reasoning and its answer.

Reasoning models write their thoughts between `<think>` and `</think>` before the answer
(Qwen3, DeepSeek-R1 and its distillations, QwQ). Some templates open the block themselves, at
the end of the prompt (DeepSeek-R1's `<|Assistant|><think>\\n`), so the output starts inside it
and only the closing tag comes. The splitter reads the text as it streams, holds back what
could be the start of a tag split across token pieces, and says which part each piece is.

A `<think>` is only taken for the opening tag before the answer has begun (leading whitespace
aside): an answer that talks about the tag later keeps it as text.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN, CLOSE = "<think>", "</think>"


def _partial_tag(text: str, tag: str) -> int:
    """How many trailing characters of `text` are a proper prefix of `tag`."""
    for i in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:i]):
            return i
    return 0


@dataclass
class Split:
    """One piece's share of reasoning and of answer."""

    reasoning: str = ""
    content: str = ""


class ReasoningSplitter:
    """Feed text pieces in order; each returns the reasoning and answer text now known."""

    def __init__(self, *, inside: bool = False) -> None:
        self.inside = inside  # in the reasoning block (the prompt may have opened it)
        self.block_start = inside  # whitespace opening the block is dropped
        self.answer_started = False  # the answer has non-whitespace text: no block opens any more
        self.after_block = False  # just closed: whitespace between the block and the answer is dropped
        self.held = ""

    def feed(self, piece: str) -> Split:
        out = Split()
        text = self.held + piece
        self.held = ""
        while text:
            if self.inside:
                if self.block_start:
                    text = text.lstrip()
                    if not text:
                        break
                    self.block_start = False
                end = text.find(CLOSE)
                if end >= 0:
                    out.reasoning += text[:end]
                    text = text[end + len(CLOSE):]
                    self.inside, self.after_block = False, True
                    continue
                keep = _partial_tag(text, CLOSE)
                out.reasoning += text[:len(text) - keep]
                self.held = text[len(text) - keep:]
                break
            if self.after_block:
                text = text.lstrip()
                if not text:
                    break
                self.after_block = False
            if not self.answer_started:
                stripped = text.lstrip()
                if stripped.startswith(OPEN):
                    text = stripped[len(OPEN):]
                    self.inside = self.block_start = True
                    continue
                if OPEN.startswith(stripped):  # empty, or a piece of the tag: wait for more
                    self.held = text
                    break
                self.answer_started = True
            out.content += text
            break
        return out

    def close(self) -> Split:
        """What is still held, at the end of the output (a tag that never completed is text)."""
        held, self.held = self.held, ""
        if self.inside:
            return Split(reasoning=held)
        return Split(content=held if self.answer_started or held.strip() else "")
