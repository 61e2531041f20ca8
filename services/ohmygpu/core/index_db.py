"""The one SQLite file behind the store, jobs and runs (`OMG_HOME/store.db`), opened the same way
by each owner of a table, and the protobuf timestamps their rows turn into."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp


def open_index(home: Path, schema: str) -> sqlite3.Connection:
    """A connection to the index with `schema` applied. WAL lets the daemon's tables be written
    from several threads; synchronous=NORMAL cannot corrupt it and spares an fsync per write."""
    home.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(home / "store.db", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db


def timestamp(seconds: float | None = None) -> Timestamp:
    """`seconds` since the epoch (now when None) as a protobuf Timestamp."""
    ts = Timestamp()
    if seconds is None:
        ts.GetCurrentTime()
    else:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts
