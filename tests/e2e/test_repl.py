"""The REPL (`omg` alone) driven on a pseudo-terminal: completion, a streamed answer, Ctrl-C
mid-answer, chat options, save/load of a conversation, history across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import DaemonProc, PtySession

pytestmark = pytest.mark.slow


def test_repl_session(daemon: DaemonProc, tmp_path: Path) -> None:
    repl = PtySession([], daemon.env)
    try:
        repl.expect("omg>")
        repl.send("hel\t")  # completion of a command
        repl.expect("help")
        repl.send("\r")
        repl.expect("chat MODEL")
        repl.send("ls\r")
        repl.expect("smollm2")
        repl.send("chat smo\t")  # completion of a model name, asked of the daemon
        repl.expect("smollm2")
        repl.send("\r")
        repl.expect("smollm2>>>")
        repl.send("/set temperature 0\r")
        repl.expect("(temperature = 0.0)")
        repl.send("/set max_tokens 12\r")
        repl.expect("(max_tokens = 12)")
        repl.send("What is the capital of France?\r")
        answer = repl.expect("smollm2>>>", timeout=60)
        assert len(answer.strip()) > 0
        # Multi-line input: a block in triple quotes, and Alt-Enter for a new line.
        repl.send('"""Line one\r')
        repl.expect("...")
        repl.send('line two"""\r')
        repl.expect("smollm2>>>", timeout=60)
        repl.send("Alpha\x1b\rBeta\r")
        repl.expect("smollm2>>>", timeout=60)
        # Ctrl-C mid-answer stops it and the REPL goes on.
        repl.send("/set max_tokens 3000\r")
        repl.expect("(max_tokens = 3000)")
        repl.send("Write a very long story about a lighthouse.\r")
        repl.read_for(1.5)
        repl.send("\x03")
        repl.expect("[stopped]", timeout=20)
        repl.expect("smollm2>>>")
        saved = tmp_path / "conv.json"
        repl.send(f"/save {saved}\r")
        repl.expect("(saved")
        data = json.loads(saved.read_text())
        assert data["model"] == "smollm2" and data["options"]["temperature"] == 0
        assert [m["role"] for m in data["messages"]][:2] == ["user", "assistant"]
        users = [m["content"] for m in data["messages"] if m["role"] == "user"]
        assert "Line one\nline two" in users and "Alpha\nBeta" in users, users
        repl.send("/clear\r")
        repl.expect("(conversation cleared)")
        repl.send(f"/load {saved}\r")
        repl.expect(f"(loaded {len(data['messages'])} messages")
        repl.send("/bye\r")
        repl.expect("omg>")
        repl.send("bogus\r")
        repl.expect("unknown command")
        repl.send("rm\r")  # argparse's usage error must not end the REPL
        repl.expect("omg>")
        repl.send("exit\r")
        assert repl.close() == 0
    finally:
        if repl.proc.poll() is None:
            repl.proc.kill()
    # History survives a restart: Up recalls the last line of the previous session.
    again = PtySession([], daemon.env)
    try:
        again.expect("omg>")
        again.send("\x1b[A")
        again.expect("exit")
        again.send("\x15\x04")  # Ctrl-U clears the recalled line, Ctrl-D on an empty line leaves
        assert again.close() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
