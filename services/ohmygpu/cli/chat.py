"""`omg chat MODEL [PROMPT]`: one-shot or interactive, streamed from the daemon."""

from __future__ import annotations

import sys
from pathlib import Path

from ohmygpu.cli.client import Client
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

HELP = "Type a message. /clear forgets the conversation, /bye (or Ctrl-D) leaves, Ctrl-C stops an answer."


def stream_answer(client: Client, request: runtime_pb2.ChatRequest, out=sys.stdout) -> str:
    """Print the answer as it streams; returns it. Ctrl-C cancels the generation."""
    call = client.stream(client.chat.Chat, request)
    parts: list[str] = []
    try:
        for message in client.iterate(call):
            if message.content:
                out.write(message.content)
                out.flush()
                parts.append(message.content)
            for tc in message.tool_calls:
                text = (f"[tool call {tc.name}] " if tc.name else "") + tc.arguments
                out.write(text)
                parts.append(text)
    except KeyboardInterrupt:
        call.cancel()
        out.write("\n[stopped]")
    out.write("\n")
    out.flush()
    return "".join(parts)


def run_chat(client: Client, model: str, prompt: str | None, params: run_spec_pb2.SamplingParams,
             system: str | None, history_path: Path) -> int:
    messages: list[runtime_pb2.ChatMessage] = []
    if system:
        messages.append(runtime_pb2.ChatMessage(role="system", content=system))
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()  # `echo hi | omg chat m` answers once, like a prompt argument
    if prompt is not None:
        messages.append(runtime_pb2.ChatMessage(role="user", content=prompt))
        stream_answer(client, runtime_pb2.ChatRequest(model=model, messages=messages, params=params))
        return 0
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory

    history_path.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(history=FileHistory(str(history_path)))
    print(HELP)
    while True:
        try:
            text = session.prompt(">>> ")
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        text = text.strip()
        if not text:
            continue
        if text in ("/bye", "/exit", "/quit"):
            return 0
        if text == "/clear":
            messages = [m for m in messages if m.role == "system"]
            print("(conversation cleared)")
            continue
        messages.append(runtime_pb2.ChatMessage(role="user", content=text))
        answer = stream_answer(client, runtime_pb2.ChatRequest(model=model, messages=messages, params=params))
        messages.append(runtime_pb2.ChatMessage(role="assistant", content=answer))
