"""Runs: RunSpecs that pin a model with its load options until stopped. Runs are in the index;
after a daemon restart, runs that were running are started again (or marked failed with the
reason), so a pinned model survives restarts."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ohmygpu.api.v1 import runs_pb2
from ohmygpu.core.errors import AlreadyExists, InvalidArgument, ModelNotFound, NotFound, OmgError, Unavailable
from ohmygpu.core.index_db import open_index, timestamp
from ohmygpu.core.names import parse_model_name
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.placement import NeverFits
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

log = logging.getLogger("ohmygpu.runs")
# What a restored run meets when its node has not joined (again) yet: it waits for one.
_NODE_MISSING = (NeverFits, NotFound, Unavailable)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, spec BLOB NOT NULL, model TEXT NOT NULL, state INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '', log_path TEXT NOT NULL DEFAULT '', created REAL NOT NULL, updated REAL NOT NULL
);
"""
_COLUMNS = "id, spec, model, state, error, log_path, created, updated"


class RunManager:
    """Owns runs; one per daemon."""

    def __init__(self, home: Path, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._db = open_index(home, _SCHEMA)
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[str, run_spec_pb2.RunSpec]] = {}  # restored runs waiting for a node
        self._retry_lock = asyncio.Lock()

    def close(self) -> None:
        self._db.close()

    def _exec(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _update(self, run_id: str, state: int, error: str = "", log_path: str | None = None) -> None:
        if log_path is None:
            self._exec("UPDATE runs SET state = ?, error = ?, updated = ? WHERE id = ?",
                       (state, error, time.time(), run_id))
        else:
            self._exec("UPDATE runs SET state = ?, error = ?, log_path = ?, updated = ? WHERE id = ?",
                       (state, error, log_path, time.time(), run_id))

    def _to_run(self, row: tuple) -> runs_pb2.Run:
        run_id, spec, model, state, error, _, created, updated = row
        run = runs_pb2.Run(id=run_id, spec=run_spec_pb2.RunSpec.FromString(spec), state=state, model=model,
                           error=error, created_at=timestamp(created), updated_at=timestamp(updated))
        worker = self.orchestrator.pinned_worker(model)
        if state == runs_pb2.RUN_STATE_RUNNING and worker is not None:
            run.pid = worker.pid
            run.node = self.orchestrator.node_name(worker.node)
        return run

    async def create(self, spec: run_spec_pb2.RunSpec) -> runs_pb2.Run:
        """Pin spec.model.repo with the spec's load options. Raises InvalidArgument, ModelNotFound,
        NeverFits, WorkerFailed; the run is then recorded as failed."""
        model = parse_model_name(spec.model.repo) if spec.model.repo else ""
        if not model:
            raise InvalidArgument("spec.model.repo must name a model in the store", param="spec.model.repo")
        await asyncio.to_thread(self.orchestrator.store.get, model)
        for row in self._exec("SELECT id FROM runs WHERE model = ? AND state IN (?, ?)",
                              (model, runs_pb2.RUN_STATE_STARTING, runs_pb2.RUN_STATE_RUNNING)):
            raise InvalidArgument(f"model '{model}' is already pinned by run {row[0]}; stop it first")
        spec = spec_or(spec, model)
        spec.run_id = spec.run_id or "run-" + uuid.uuid4().hex[:10]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", spec.run_id):
            raise InvalidArgument("spec.run_id must be letters, digits, . _ - (at most 64)", param="spec.run_id")
        if self._exec("SELECT 1 FROM runs WHERE id = ?", (spec.run_id,)):
            raise AlreadyExists(f"run '{spec.run_id}' already exists")
        await self.orchestrator.check_run(model, spec)  # a run asking the impossible is not recorded
        now = time.time()
        self._exec(f"INSERT INTO runs({_COLUMNS}) VALUES (?, ?, ?, ?, '', '', ?, ?)",
                   (spec.run_id, spec.SerializeToString(), model, runs_pb2.RUN_STATE_STARTING, now, now))
        await self._start(spec.run_id, model, spec)
        return await self.get(spec.run_id)

    async def _start(self, run_id: str, model: str, spec: run_spec_pb2.RunSpec, *, may_wait: bool = False) -> None:
        try:
            worker = await self.orchestrator.pin(model, spec)
        except OmgError as e:
            if may_wait and isinstance(e, _NODE_MISSING) and not isinstance(e, ModelNotFound):
                # After a restart its node may not have joined again yet: it starts when one does.
                self._waiting[run_id] = (model, spec)
                self._update(run_id, runs_pb2.RUN_STATE_STARTING, f"waiting for a node: {e.message}")
            else:
                self._update(run_id, runs_pb2.RUN_STATE_FAILED, e.message)
            raise
        self._waiting.pop(run_id, None)
        self._update(run_id, runs_pb2.RUN_STATE_RUNNING, log_path=str(worker.log_path))

    async def restore(self) -> None:
        """Start again the runs that were running when the daemon stopped; one whose node has
        not joined yet waits for it (see node_up)."""
        for run_id, spec, model in self._exec("SELECT id, spec, model FROM runs WHERE state IN (?, ?)",
                                              (runs_pb2.RUN_STATE_STARTING, runs_pb2.RUN_STATE_RUNNING)):
            log.warning("restoring run %s (%s) after a restart", run_id, model)
            try:
                await self._start(run_id, model, run_spec_pb2.RunSpec.FromString(spec), may_wait=True)
            except OmgError as e:
                log.error("run %s could not be restored%s: %s", run_id,
                          " yet (it waits for a node)" if run_id in self._waiting else "", e.message)

    async def node_up(self, node: object) -> None:
        """A node joined or came back: start the runs waiting for one."""
        async with self._retry_lock:
            for run_id, (model, spec) in list(self._waiting.items()):
                try:
                    await self._start(run_id, model, spec, may_wait=True)
                    log.warning("run %s (%s) restored now that node %s is up", run_id, model,
                                getattr(node, "name", "?"))
                except OmgError as e:
                    log.info("run %s still waits: %s", run_id, e.message)

    async def get(self, run_id: str) -> runs_pb2.Run:
        rows = self._exec(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotFound(f"run '{run_id}' not found")
        return self._to_run(rows[0])

    async def list(self) -> list[runs_pb2.Run]:
        return [self._to_run(r) for r in self._exec(f"SELECT {_COLUMNS} FROM runs ORDER BY created DESC LIMIT 200")]

    async def stop(self, run_id: str) -> runs_pb2.Run:
        run = await self.get(run_id)
        self._waiting.pop(run_id, None)
        if run.state in (runs_pb2.RUN_STATE_STARTING, runs_pb2.RUN_STATE_RUNNING):
            await self.orchestrator.unpin(run.model)
            self._update(run_id, runs_pb2.RUN_STATE_STOPPED, "stopped by request")
        return await self.get(run_id)

    async def logs(self, run_id: str, *, follow: bool) -> AsyncIterator[str]:
        """The run's worker log lines; with follow, new ones until the client goes away."""
        run = await self.get(run_id)
        worker = self.orchestrator.pinned_worker(run.model)
        if worker is not None and worker.node != 0:  # its log file is on its node: ask the worker
            async for entry in worker.stub.StreamLogs(runtime_pb2.StreamLogsRequest(follow=follow)):
                yield entry.line
            return
        rows = self._exec("SELECT log_path FROM runs WHERE id = ?", (run_id,))
        path = Path(rows[0][0]) if rows and rows[0][0] else None
        if path is None or not path.exists():
            return
        with open(path, errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                    continue
                if not follow:
                    return
                await asyncio.sleep(0.2)


def spec_or(spec: run_spec_pb2.RunSpec, model: str) -> run_spec_pb2.RunSpec:
    """The spec with its model named (as stored)."""
    out = run_spec_pb2.RunSpec()
    out.CopyFrom(spec)
    out.model.repo = model
    return out
