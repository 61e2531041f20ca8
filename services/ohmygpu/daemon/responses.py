"""Stored responses of OpenAI's Responses API, in the daemon's index (`OMG_HOME/store.db`).

A stored response keeps what `GET /v1/responses/{id}` returns, and the conversation that led
to it with its own output appended, as contract ChatMessages: `previous_response_id` continues
from there, so a client sends only its new turn (the whole history stays on the daemon and
survives a restart). `store: false` responses are never written. The table is bounded: beyond
`keep` rows the oldest go (OpenAI keeps stored responses 30 days; a local daemon keeps a count).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from ohmygpu.core.errors import NotFound
from ohmygpu.core.index_db import open_index
from ohmygpu.runtime.v1 import runtime_pb2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    model TEXT NOT NULL,
    body TEXT NOT NULL,
    conversation TEXT NOT NULL,
    input_items TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""


@dataclass
class StoredResponse:
    """A stored response: its JSON, the conversation through its output, its input items."""

    id: str
    body: dict[str, Any]
    conversation: list[runtime_pb2.ChatMessage]
    input_items: list[dict[str, Any]]


class ResponseStore:
    """The responses table; its methods run on a worker thread (they touch SQLite)."""

    def __init__(self, home: Path, *, keep: int = 10_000) -> None:
        self._db: sqlite3.Connection = open_index(home, _SCHEMA)
        self._lock = threading.Lock()
        self.keep = keep

    def put(self, response: StoredResponse) -> None:
        conversation = json.dumps([json_format.MessageToDict(m) for m in response.conversation])
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses (id, created, model, body, conversation, input_items) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (response.id, time.time(), str(response.body.get("model", "")), json.dumps(response.body),
                 conversation, json.dumps(response.input_items)))
            self._db.execute("DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY created DESC "
                             "LIMIT -1 OFFSET ?)", (self.keep,))

    def get(self, response_id: str) -> StoredResponse:
        """Raises NotFound (a 404 in each dialect) for an id never stored, deleted, or store: false."""
        with self._lock:
            row = self._db.execute("SELECT body, conversation, input_items FROM responses WHERE id = ?",
                                   (response_id,)).fetchone()
        if row is None:
            raise NotFound(f"no stored response with id '{response_id[:100]}' (it was deleted, never "
                           "stored, or made with store: false)")
        conversation = [json_format.ParseDict(m, runtime_pb2.ChatMessage()) for m in json.loads(row[1])]
        return StoredResponse(response_id, json.loads(row[0]), conversation, json.loads(row[2]))

    def delete(self, response_id: str) -> None:
        """Raises NotFound when there is no such response."""
        with self._lock:
            gone = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount
        if not gone:
            raise NotFound(f"no stored response with id '{response_id[:100]}'")
