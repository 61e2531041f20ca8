"""The one SQLite file behind the store, jobs and runs (`OMG_HOME/store.db`), opened the same way
by each owner of a table, and the protobuf timestamps their rows turn into."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from ohmygpu.core.errors import CorruptIndex


def open_index(home: Path, schema: str) -> sqlite3.Connection:
    """A connection to the index with `schema` applied. WAL lets the daemon's tables be written
    from several threads; synchronous=NORMAL cannot corrupt it and spares an fsync per write.

    Raises CorruptIndex, saying how to recover, when the file is damaged (truncated, overwritten,
    not SQLite) or cannot be opened: found here, at start, rather than as a 500 on every listing."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "store.db"
    db = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # quick_check reads every page once (the index is small) and finds what a truncation or
        # an overwrite did before a query trips on it.
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(str(p) for p in problems)[:200])
        db.executescript(schema)
    except sqlite3.DatabaseError as e:
        if db is not None:
            db.close()
        raise CorruptIndex(_recovery(path, e)) from None
    return db


def _recovery(path: Path, error: sqlite3.DatabaseError) -> str:
    # Shown by `omg serve` on the local terminal only, so the path helps the user and leaks nothing.
    if isinstance(error, sqlite3.OperationalError) and "unable to open" in str(error):
        return (f"cannot open the index {path} ({error}); check that OMG_HOME is a writable directory "
                "of yours")
    return (f"the index {path} is damaged ({error}), so the daemon cannot start with it. To recover, "
            f"move it aside: mv {path} {path}.damaged (and {path.name}-wal, {path.name}-shm beside it, "
            "if there), then start again with an empty index. Pulled models stay in the HF cache: pull "
            "them again and nothing is downloaded twice; models added in place need `omg model add` again.")


def timestamp(seconds: float | None = None) -> Timestamp:
    """`seconds` since the epoch (now when None) as a protobuf Timestamp."""
    ts = Timestamp()
    if seconds is None:
        ts.GetCurrentTime()
    else:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts
