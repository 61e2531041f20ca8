"""`omg` with no arguments: a REPL over the daemon (prompt_toolkit).

Commands (`ls`, `ps`, `pull`, `rm`, `run`, `stop`, `logs`, `status`, `image`, `say`, `train`,
`jobs`, `help`, `exit`) run the same code as `omg <command>`; `chat MODEL` enters a conversation where plain lines go to the
model, streamed, and `/set`, `/system`, `/clear`, `/save`, `/load`, `/show`, `/bye` manage it.
Tab completes commands and model names (asked of the daemon); history persists in
OMG_HOME/repl_history; Alt-Enter (or a block between triple quotes) gives multi-line input;
Ctrl-C stops an answer without leaving.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ohmygpu.api.v1 import models_pb2
from ohmygpu.cli.chat import stream_answer
from ohmygpu.cli.client import Client, CliError
from ohmygpu.core.settings import Settings
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

# REPL command -> the `omg` arguments it runs (the rest of the line is appended).
COMMANDS: dict[str, list[str]] = {
    "ls": ["model", "list"], "ps": ["ps"], "pull": ["pull"], "rm": ["model", "rm"], "run": ["run"],
    "stop": ["run", "stop"], "logs": ["run", "logs"], "status": ["serve", "status"], "info": ["model", "info"],
    "transcribe": ["transcribe"], "embed": ["embed"], "events": ["events"], "config": ["config"],
    "image": ["gen", "image"], "say": ["say"], "train": ["train"], "jobs": ["job", "list"],
}
SESSION_COMMANDS = ("chat", "help", "exit", "quit")
MODEL_ARG = {"chat", "rm", "run", "info", "embed"}
CHAT_COMMANDS = ("/set", "/system", "/clear", "/save", "/load", "/show", "/bye", "/help")
SETTABLE = {"temperature": float, "top_p": float, "top_k": int, "seed": int, "max_tokens": int,
            "min_p": float, "repeat_penalty": float}

HELP = """commands:
  chat MODEL        talk to a model (plain lines are messages; /bye comes back here)
  ls | ps | info M  models in the store | loaded models | one model's details
  pull SOURCE       download from the hub (org/repo, hf.co/org/repo:QUANT)
  rm MODEL          remove a model          run MODEL    pin a model (run ls, stop ID, logs ID)
  stop RUN | logs RUN | status | events | config | transcribe FILE | embed MODEL TEXT
  image PROMPT -m M  generate an image (a bar per step; -o out.png, --steps, --seed, --init, --mask)
  say TEXT -m M      speak text to a file (-o out.wav)   train M --data F --out N   jobs
  help | exit       this text | leave (or Ctrl-D)
in a chat: /set temperature 0.2 | /system TEXT | /clear | /save FILE | /load FILE | /show | /bye
multi-line: Alt-Enter for a new line, or wrap the text in triple quotes; Ctrl-C stops an answer"""


@dataclass
class Conversation:
    """The chat in progress: model, messages, options."""

    model: str
    messages: list[runtime_pb2.ChatMessage] = field(default_factory=list)
    options: dict[str, float | int] = field(default_factory=dict)

    def params(self) -> run_spec_pb2.SamplingParams:
        return run_spec_pb2.SamplingParams(**self.options)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "options": self.options,
                "messages": [{"role": m.role, "content": m.content} for m in self.messages]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        conv = cls(model=str(data["model"]), options=dict(data.get("options") or {}))
        for m in data.get("messages") or []:
            conv.messages.append(runtime_pb2.ChatMessage(role=str(m["role"]), content=str(m["content"])))
        return conv


class ModelNames:
    """Model names from the daemon for completion, cached for a few seconds."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.names: list[str] = []
        self.at = 0.0

    def get(self) -> list[str]:
        if time.monotonic() - self.at > 5:
            self.at = time.monotonic()
            try:
                resp = self.client.models.ListModels(models_pb2.ListModelsRequest(), timeout=1,
                                                     metadata=self.client.metadata)
                self.names = [m.name for m in resp.models]
            except Exception:  # completion must never break the prompt; the list stays as it was
                pass
        return self.names


def make_completer(models: ModelNames, in_chat: Callable[[], bool]) -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class OmgCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterable[Completion]:
            text = document.text_before_cursor
            words = text.split()
            ending = "" if text.endswith(" ") else (words[-1] if words else "")
            position = len(words) - (0 if text.endswith(" ") else 1)
            if in_chat():
                if position == 0 and ending.startswith("/"):
                    candidates: Iterable[str] = CHAT_COMMANDS
                elif words[:1] == ["/set"] and position == 1:
                    candidates = SETTABLE
                else:
                    return
            elif position == 0:
                candidates = list(COMMANDS) + list(SESSION_COMMANDS)
            elif position == 1 and words[0] in MODEL_ARG:
                candidates = models.get()
            else:
                return
            for c in candidates:
                if c.startswith(ending):
                    yield Completion(c, start_position=-len(ending))

    return OmgCompleter()


class Repl:
    """The read-eval-print loop."""

    def __init__(self, settings: Settings, run_command: Callable[[list[str]], int]) -> None:
        self.settings = settings
        self.client = Client(settings)
        self.run_command = run_command
        self.chat: Conversation | None = None

    def prompt_text(self) -> str:
        return f"{self.chat.model}>>> " if self.chat else "omg> "

    def run(self) -> int:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        history = self.settings.home_path / "repl_history"
        history.parent.mkdir(parents=True, exist_ok=True)
        keys = KeyBindings()

        @keys.add("escape", "enter")  # Alt-Enter: a new line instead of sending
        def _(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        session: Any = PromptSession(history=FileHistory(str(history)), key_bindings=keys,
                                     completer=make_completer(ModelNames(self.client), lambda: self.chat is not None),
                                     complete_while_typing=False)
        print("omg: type help for commands, exit to leave")
        while True:
            try:
                line = session.prompt(self.prompt_text())
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            if line.strip().startswith('"""'):
                line = self._block(session, line)
            try:
                if self.handle(line) is False:
                    return 0
            except CliError as e:
                print(f"omg: {e.message}")

    @staticmethod
    def _block(session: Any, first: str) -> str:
        # A """...""" block: read lines until the closing quotes.
        text = first.strip()[3:]
        while not text.rstrip().endswith('"""'):
            try:
                text += "\n" + session.prompt("... ")
            except (EOFError, KeyboardInterrupt):
                break
        return text.rstrip().removesuffix('"""')

    def handle(self, line: str) -> bool | None:
        """Run one input; False means leave."""
        if self.chat is not None:
            return self.chat_line(line)
        try:
            words = shlex.split(line)
        except ValueError as e:
            print(f"omg: {e}")
            return None
        if not words:
            return None
        command, rest = words[0], words[1:]
        if command in ("exit", "quit"):
            return False
        if command == "help":
            print(HELP)
        elif command == "chat":
            if not rest:
                print("omg: chat needs a model name (ls lists them)")
                return None
            self.chat = Conversation(model=rest[0])
            print(f"chatting with {rest[0]}; /bye to come back, /help for chat commands")
        elif command in COMMANDS:
            self.run_command(COMMANDS[command] + rest)
        else:
            print(f"omg: unknown command '{command}'; help lists them")
        return None

    def chat_line(self, line: str) -> None:
        assert self.chat is not None
        text = line.strip()
        if not text:
            return
        if text.startswith("/"):
            self.chat_command(text)
            return
        self.chat.messages.append(runtime_pb2.ChatMessage(role="user", content=line))
        request = runtime_pb2.ChatRequest(model=self.chat.model, messages=self.chat.messages,
                                          params=self.chat.params())
        try:
            answer = stream_answer(self.client, request)
        except CliError:
            self.chat.messages.pop()  # a failed turn is not part of the conversation
            raise
        self.chat.messages.append(runtime_pb2.ChatMessage(role="assistant", content=answer))

    def chat_command(self, text: str) -> None:
        assert self.chat is not None
        command, _, arg = text.partition(" ")
        arg = arg.strip()
        if command == "/bye":
            self.chat = None
        elif command == "/help":
            print(HELP.split("in a chat: ", 1)[1])
        elif command == "/clear":
            self.chat.messages = [m for m in self.chat.messages if m.role == "system"]
            print("(conversation cleared)")
        elif command == "/system":
            self.chat.messages = [m for m in self.chat.messages if m.role != "system"]
            if arg:
                self.chat.messages.insert(0, runtime_pb2.ChatMessage(role="system", content=arg))
            print("(system message set)" if arg else "(system message removed)")
        elif command == "/set":
            key, _, value = arg.partition(" ")
            if key not in SETTABLE:
                print(f"omg: /set takes one of {', '.join(SETTABLE)}")
                return
            try:
                self.chat.options[key] = SETTABLE[key](value)
            except ValueError:
                print(f"omg: {key} needs a {SETTABLE[key].__name__}")
                return
            print(f"({key} = {self.chat.options[key]})")
        elif command == "/show":
            print(json.dumps({"model": self.chat.model, "options": self.chat.options,
                              "messages": len(self.chat.messages)}))
        elif command == "/save":
            path = Path(arg or "conversation.json").expanduser()
            path.write_text(json.dumps(self.chat.to_json(), indent=2))
            print(f"(saved {len(self.chat.messages)} messages to {path})")
        elif command == "/load":
            try:
                self.chat = Conversation.from_json(json.loads(Path(arg).expanduser().read_text()))
            except (OSError, ValueError, KeyError, TypeError) as e:
                print(f"omg: cannot load {arg}: {e}")
                return
            print(f"(loaded {len(self.chat.messages)} messages; chatting with {self.chat.model})")
        else:
            print(f"omg: unknown chat command {command}; /help lists them")
