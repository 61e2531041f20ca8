"""A training dataset checked before any job starts: JSONL, one example per line.

Each non-blank line is a JSON object of one of three shapes:

- chat: `{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}`
  (the loss is on the last assistant message; system/user/assistant/tool roles);
- prompt and completion: `{"prompt": "...", "completion": "..."}` (the loss is on the completion);
- plain text: `{"text": "..."}` (the loss is on all of it).

Pure: the daemon calls `check` on the request's text (gRPC INVALID_ARGUMENT, HTTP 400, naming
the line), the trainer worker `parse` on the file the daemon wrote. Bounded: at most
MAX_BYTES of text and MAX_EXAMPLES examples, so a huge upload is refused before it is parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ohmygpu.core.errors import InvalidArgument

MAX_BYTES = 64 << 20
MAX_EXAMPLES = 100_000
MAX_LINE_BYTES = 1 << 20
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Example:
    """One training example: the text the loss ignores (`prompt`, or chat turns before the last
    assistant message), the text it is computed on (`target`), or chat `messages` for the
    tokenizer's template."""

    kind: str  # "chat", "completion", "text"
    prompt: str = ""
    target: str = ""
    messages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Summary:
    examples: int
    kinds: tuple[str, ...]  # the shapes present, sorted


def _refuse(line: int, why: str) -> InvalidArgument:
    return InvalidArgument(f"training data line {line}: {why}", param="data")


def _example(obj: object, line: int) -> Example:
    if not isinstance(obj, dict):
        raise _refuse(line, f"a JSON object is needed, not {type(obj).__name__}")
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise _refuse(line, '"messages" must be a non-empty list of {"role", "content"} objects')
        turns = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise _refuse(line, f'message {i} needs a "role" and a string "content"')
            if m["role"] not in _ROLES:
                raise _refuse(line, f"message {i} has role {m['role'][:20]!r}; one of {', '.join(_ROLES)}")
            turns.append((m["role"], m["content"]))
        if not any(role == "assistant" and content.strip() for role, content in turns):
            raise _refuse(line, "no assistant message with content: nothing to learn")
        last = max(i for i, (role, content) in enumerate(turns) if role == "assistant" and content.strip())
        return Example("chat", messages=tuple(turns[: last + 1]))
    if "prompt" in obj or "completion" in obj:
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str):
            raise _refuse(line, 'missing or non-string "prompt" (a "completion" row needs both)')
        if not isinstance(completion, str) or not completion.strip():
            raise _refuse(line, 'missing or empty "completion" (a "prompt" row needs both)')
        return Example("completion", prompt=prompt, target=completion)
    if "text" in obj:
        if not isinstance(obj["text"], str) or not obj["text"].strip():
            raise _refuse(line, '"text" must be a non-empty string')
        return Example("text", target=obj["text"])
    keys = ", ".join(sorted(str(k)[:20] for k in obj)[:5]) or "none"
    raise _refuse(line, f'missing fields: "messages", "prompt" and "completion", or "text" (it has: {keys})')


def parse(text: str | bytes) -> list[Example]:
    """The examples of a JSONL dataset; raises InvalidArgument naming the first bad line (not
    JSON, missing fields), an empty dataset, or one over MAX_BYTES / MAX_EXAMPLES."""
    if len(text) > MAX_BYTES:
        raise InvalidArgument(f"the training data is over {MAX_BYTES >> 20} MiB", param="data")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(f"the training data is not UTF-8 text (byte {e.start})", param="data") from None
    examples: list[Example] = []
    for n, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            raise _refuse(n, f"longer than {MAX_LINE_BYTES >> 10} KiB")
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise _refuse(n, f"not JSON ({str(e)[:80]}); the data must be JSONL, one object per line") from None
        examples.append(_example(obj, n))
        if len(examples) > MAX_EXAMPLES:
            raise InvalidArgument(f"the training data has more than {MAX_EXAMPLES} examples", param="data")
    if not examples:
        raise InvalidArgument("the training data is empty: one JSON object per line is needed", param="data")
    return examples


def check(text: str | bytes) -> Summary:
    """What `parse` checks, summarized; raises as it does."""
    examples = parse(text)
    return Summary(len(examples), tuple(sorted({e.kind for e in examples})))
