"""Jobs: queued, run, watched, cancelled, and resumed after a daemon restart.

A job's request and state are in the index (SQLite) from the moment it is created; progress
lives in memory and is served to watchers. On start, jobs that were queued or running when the
daemon stopped are run again: their partial downloads resume where they were. Pulls are run
here; other kinds (training, daemon/training.py) register a JobKind that runs and resumes
them, and share the rows, listing, watching and cancelling.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from ohmygpu.api.v1 import jobs_pb2, models_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.download import disk_error
from ohmygpu.core.errors import FailedPrecondition, NotFound, OmgError
from ohmygpu.core.hub import HubClient
from ohmygpu.core.index_db import open_index, timestamp
from ohmygpu.core.names import parse_model_name, parse_part_source, parse_source
from ohmygpu.core.pull import FileState, PullProgress, pull
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.events import EventBus
from ohmygpu.events.v1 import events_pb2

log = logging.getLogger("ohmygpu.jobs")
_ENDED = {jobs_pb2.JOB_STATE_DONE, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, request BLOB NOT NULL, state INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT '', model TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
);
"""


def _count(n: object) -> int:
    """A byte count for a uint64 field: progress is ours, but never let a bad number past."""
    return min(max(0, n), (1 << 64) - 1) if isinstance(n, int) else 0


class JobKind(Protocol):
    """What runs the jobs of one kind other than "pull" (registered in JobManager.kinds)."""

    def resume(self, job_id: str, request: bytes) -> None:
        """Start again job `job_id`, which a previous daemon left queued or running."""
        ...

    def describe(self, job: jobs_pb2.Job) -> None:
        """Fill in the progress of a job of this kind that is not running in this daemon."""
        ...


class _Running:
    def __init__(self) -> None:
        self.progress = PullProgress()
        self.train: jobs_pb2.TrainProgress | None = None  # a training job's progress
        self.cancel = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.version = 0
        self.changed = asyncio.Event()
        self.counted = 0  # of progress.downloaded, added to JobManager.downloaded_bytes


class JobManager:
    """Owns pull jobs; one instance per daemon."""

    def __init__(self, settings: Settings, store: ModelStore, events: EventBus | None = None) -> None:
        self.events = events or EventBus()
        self.settings = settings
        self.store = store
        self._db = open_index(Path(settings.home), _SCHEMA)
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._hub: HubClient | None = None
        # Puts a pulled model on a node (`omg pull --node`): NodeRegistry.place_files, set by the server.
        self.to_node: Callable[..., Awaitable[None]] | None = None
        # Bytes every pull of this daemon's life downloaded (or copied to a node): only grows.
        self.downloaded_bytes = 0
        self.kinds: dict[str, JobKind] = {}  # job kinds run elsewhere, by name ("train")

    @property
    def hub(self) -> HubClient:
        if self._hub is None:
            self._hub = HubClient(self.settings.hf_endpoint, self.settings.hub_token())
        return self._hub

    async def close(self) -> None:
        for run in list(self._running.values()):
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in self._running.values() if r.task), return_exceptions=True)
        if self._hub is not None:
            await self._hub.aclose()
        self._db.close()

    # -- persistence ------------------------------------------------------------------------

    def _row(self, job_id: str) -> tuple | None:
        with self._lock:
            return self._db.execute("SELECT id, kind, request, state, error, model, created, updated "
                                    "FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def _set_state(self, job_id: str, state: int, error: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?",
                             (state, error, time.time(), job_id))

    def _to_job(self, row: tuple) -> jobs_pb2.Job:
        """The job of one row with its live progress. Never raises: a job whose progress cannot
        be shown is listed with its row alone (one bad job must not make every listing fail)."""
        job_id, kind, _, state, error, model, created, updated = row
        job = jobs_pb2.Job(id=job_id, kind=kind, state=state, model=model, error=error,
                           created_at=timestamp(created), updated_at=timestamp(updated))
        run = self._running.get(job_id)
        if kind in self.kinds and (run is None or run.train is None):
            self.kinds[kind].describe(job)
            return job
        if run is None:
            return job
        if run.train is not None:
            job.train.CopyFrom(run.train)
            job.message = run.progress.note
            return job
        try:
            self._add_progress(job, run.progress, state)
        except (ValueError, TypeError, OverflowError):
            log.exception("job %s: progress cannot be shown", job_id)
            job = jobs_pb2.Job(id=job_id, kind=kind, state=state, model=model, error=error,
                               created_at=timestamp(created), updated_at=timestamp(updated))
        return job

    @staticmethod
    def _add_progress(job: jobs_pb2.Job, p: PullProgress, state: int) -> None:
        for f in p.files.values():
            job.files.add(filename=f.filename, completed=_count(f.completed), total=_count(f.total),
                          sha256=f.sha256, state=f.state)
        job.completed_bytes, job.total_bytes = _count(p.completed), _count(p.total)
        job.downloaded_bytes = _count(p.downloaded)
        job.message = p.note
        job.rate_bytes_per_second = p.rate
        if p.rate > 0 and state == jobs_pb2.JOB_STATE_RUNNING:
            job.eta_seconds = max(0.0, (p.total - p.completed) / p.rate)

    # -- API --------------------------------------------------------------------------------

    async def submit(self, request: models_pb2.InstallModelRequest) -> jobs_pb2.Job:
        """Validate and queue a pull; raises InvalidName/InvalidArgument before anything runs."""
        parse_source(request.source)
        for part in request.parts:
            parse_part_source(part)
        model = parse_model_name(request.name or request.source.strip())
        job_id = "job-" + uuid.uuid4().hex[:12]
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO jobs(id, kind, request, state, model, created, updated) "
                             "VALUES (?, 'pull', ?, ?, ?, ?, ?)",
                             (job_id, request.SerializeToString(), jobs_pb2.JOB_STATE_QUEUED, model, now, now))
        self._start(job_id, request)
        return await self.get(job_id)

    def resume_unfinished(self) -> list[str]:
        """Restart jobs a previous daemon left queued or running."""
        with self._lock:
            rows = self._db.execute("SELECT id, kind, request FROM jobs WHERE state IN (?, ?)",
                                    (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING)).fetchall()
        for job_id, kind, blob in rows:
            log.warning("resuming %s after a restart", job_id)
            if kind in self.kinds:
                self.kinds[kind].resume(job_id, blob)
            elif kind == "pull":
                self._start(job_id, models_pb2.InstallModelRequest.FromString(blob))
            else:
                self._set_state(job_id, jobs_pb2.JOB_STATE_FAILED, f"no daemon part runs '{kind}' jobs")
        return [r[0] for r in rows]

    # -- for other job kinds ----------------------------------------------------------------

    def create(self, kind: str, request: bytes, model: str) -> str:
        """A new queued job row of `kind`; returns its id."""
        job_id = "job-" + uuid.uuid4().hex[:12]
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO jobs(id, kind, request, state, model, created, updated) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (job_id, kind, request, jobs_pb2.JOB_STATE_QUEUED, model, now, now))
        return job_id

    def start_task(self, job_id: str, body: Callable[[_Running], Awaitable[None]]) -> _Running:
        """Run `body` as job `job_id`'s task: it sets the states (set_state) and its progress
        (run.train, run.progress.note, then run.changed()); cancel and watch work as for pulls."""
        run = _Running()
        run.train = jobs_pb2.TrainProgress()

        def changed() -> None:
            run.version += 1
            run.changed.set()

        run.progress.changed = changed
        self._running[job_id] = run
        run.task = asyncio.get_running_loop().create_task(body(run))
        return run

    def set_state(self, job_id: str, state: int, error: str = "") -> None:
        self._set_state(job_id, state, error)

    def active(self, kind: str) -> list[jobs_pb2.Job]:
        """The queued or running jobs of `kind` (their rows, without progress)."""
        with self._lock:
            rows = self._db.execute("SELECT id, kind, request, state, error, model, created, updated FROM jobs "
                                    "WHERE kind = ? AND state IN (?, ?)",
                                    (kind, jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING)).fetchall()
        return [jobs_pb2.Job(id=r[0], kind=r[1], state=r[3], model=r[5]) for r in rows]

    def _start(self, job_id: str, request: models_pb2.InstallModelRequest) -> None:
        run = _Running()
        last = [0.0]

        def changed() -> None:
            run.version += 1
            run.changed.set()
            grown = run.progress.downloaded - run.counted
            if grown > 0:
                self.downloaded_bytes += grown
                run.counted = run.progress.downloaded
            now = time.monotonic()
            if now - last[0] >= 0.5:  # progress events at most twice a second per job
                last[0] = now
                p = run.progress
                self.events.publish(events_pb2.EVENT_KIND_DOWNLOAD, f"pulling {request.source}",
                                    subject=f"job:{job_id}", completed=_count(p.completed), total=_count(p.total),
                                    unit="bytes", rate=f"{p.rate:.0f}")

        run.progress.changed = changed
        self._running[job_id] = run
        run.task = asyncio.get_running_loop().create_task(self._run(job_id, request, run))

    async def _run(self, job_id: str, request: models_pb2.InstallModelRequest, run: _Running) -> None:
        self._set_state(job_id, jobs_pb2.JOB_STATE_RUNNING)
        run.progress.changed()
        try:
            record = await pull(request.source, store=self.store, hub=self.hub,
                                hf_cache=Path(self.settings.hf_hub_cache), progress=run.progress,
                                name=request.name, include=list(request.include), exclude=list(request.exclude),
                                max_rate=request.max_rate or self.settings.max_rate,
                                parallel=self.settings.pull_parallel, cancelled=run.cancel,
                                parts=list(request.parts))
            if request.node:
                await self._to_node(request.node, record, run)
            self._set_state(job_id, jobs_pb2.JOB_STATE_DONE)
            p = run.progress
            self.events.publish(events_pb2.EVENT_KIND_DOWNLOAD, f"pulled {request.source}", subject=f"job:{job_id}",
                                completed=_count(p.total), total=_count(p.total), unit="bytes", state="done")
        except asyncio.CancelledError:
            if run.cancel.is_set():
                self._set_state(job_id, jobs_pb2.JOB_STATE_CANCELLED, "cancelled")
            else:
                raise  # the daemon is stopping: the job stays "running" and resumes next start
        except Exception as e:  # any failure, a bug included, fails the job: never left running
            failure = e if isinstance(e, OmgError) else disk_error(e) if isinstance(e, OSError) else None
            if failure is None:
                log.exception("job %s crashed", job_id)
                failure = OmgError("the pull failed unexpectedly (a bug: the daemon log has the details)")
            self._set_state(job_id, jobs_pb2.JOB_STATE_FAILED, failure.message)
            self.events.publish(events_pb2.EVENT_KIND_ERROR, f"pull of {request.source} failed: {failure.message}",
                                subject=f"job:{job_id}", level=events_pb2.LEVEL_ERROR)
        finally:
            run.progress.changed()

    async def _to_node(self, node: str, record: assets_pb2.InstallRecord, run: _Running) -> None:
        """The pull's second stage: the files onto node `node`, shown as one more file of the job."""
        if self.to_node is None:
            raise FailedPrecondition("this daemon accepts no nodes (OMG_NODE_TOKEN is not set)")
        state = FileState(f"to node {node}", record.size_bytes, state="copying")
        run.progress.files[state.filename] = state
        run.progress.stage = f"placing on node {node}"
        run.progress.changed()

        def progress(done: int, total: int, stage: str) -> None:
            run.progress.add_bytes(max(0, done - state.completed))
            state.completed = min(done, state.total)
            run.progress.changed()

        await self.to_node(node, record, progress)
        state.completed, state.state = state.total, "done"
        run.progress.changed()

    async def get(self, job_id: str) -> jobs_pb2.Job:
        row = await asyncio.to_thread(self._row, job_id)
        if row is None:
            raise NotFound(f"job '{job_id}' not found")
        return self._to_job(row)

    async def list(self) -> list[jobs_pb2.Job]:
        with self._lock:
            rows = self._db.execute("SELECT id, kind, request, state, error, model, created, updated "
                                    "FROM jobs ORDER BY created DESC LIMIT 200").fetchall()
        return [self._to_job(r) for r in rows]

    async def cancel(self, job_id: str) -> jobs_pb2.Job:
        job = await self.get(job_id)
        run = self._running.get(job_id)
        if job.state not in _ENDED and run is not None and run.task is not None:
            run.cancel.set()
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
            if (await self.get(job_id)).state not in _ENDED:
                self._set_state(job_id, jobs_pb2.JOB_STATE_CANCELLED, "cancelled")
        return await self.get(job_id)

    async def watch(self, job_id: str, *, interval: float = 0.25) -> AsyncIterator[jobs_pb2.Job]:
        """The job now, then whenever it changes (at most every `interval`), until it ends."""
        job = await self.get(job_id)
        yield job
        while job.state not in _ENDED:
            run = self._running.get(job_id)
            if run is None:
                return
            run.changed.clear()
            try:
                await asyncio.wait_for(run.changed.wait(), timeout=5.0)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(interval)
            job = await self.get(job_id)
            yield job
