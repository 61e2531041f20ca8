"""Training jobs: a LoRA adapter trained on a Hugging Face format model by a trainer worker,
then registered as a model (MODEL_KIND_ADAPTER) that is served over its base.

A job has a pull's lifecycle (daemon/jobs.py: its row, `omg job list`, watch, cancel) and its
own files under OMG_HOME/training/<job id>/: the checked dataset, the checkpoints, the output.
The dataset is checked (core/train_data.py) and the base looked up before the job exists, so
bad data is a 400 and no job. The trainer worker is placed and budgeted by the scheduler like
any worker (daemon/orchestrator.start_trainer) and held until the job ends. If it dies mid-job
it is started again (at most MAX_RESTARTS times) and resumes from its last checkpoint; after a
daemon restart (kill -9 included) the job is run again the same way. Progress is persisted at
each checkpoint, so a listing after a restart still shows how far the job had come.

A GGUF base (CreateTrainJobRequest.gguf_base): the user trains on the Hugging Face format copy
of the same model (`model`); the worker also writes the adapter as a GGUF LoRA and the adapter
is registered over the GGUF base, which the llama.cpp worker serves with it applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import grpc
from ohmygpu.api.v1 import jobs_pb2, train_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import train_data
from ohmygpu.core.digests import sha256_file
from ohmygpu.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MissingExtra, OmgError
from ohmygpu.core.index_db import open_index, timestamp
from ohmygpu.core.kinds import format_of
from ohmygpu.core.names import parse_model_name
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.jobs import JobManager
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.specs import spec_for
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.events.v1 import events_pb2
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.registry import RUNTIMES, library_available

log = logging.getLogger("ohmygpu.training")
KIND = "train"
MAX_RESTARTS = 2  # a trainer worker that dies mid-job is started again this many times
GGUF_ADAPTER = "adapter.gguf"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS train_progress (job_id TEXT PRIMARY KEY, progress BLOB NOT NULL);
"""
_DEATH = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)


def _is_hf_llm(record: assets_pb2.InstallRecord) -> bool:
    return record.format == assets_pb2.ARTIFACT_FORMAT_SAFETENSORS and record.kind == assets_pb2.MODEL_KIND_LLM


class TrainingJobs:
    """Runs the daemon's training jobs (the "train" kind of JobManager)."""

    def __init__(self, settings: Settings, store: ModelStore, orchestrator: Orchestrator, jobs: JobManager,
                 events: EventBus) -> None:
        self.settings, self.store, self.orchestrator, self.jobs, self.events = settings, store, orchestrator, jobs, events
        self.root = settings.home_path / "training"
        self._db = open_index(settings.home_path, _SCHEMA)
        jobs.kinds[KIND] = self

    def close(self) -> None:
        self._db.close()

    # -- submit -----------------------------------------------------------------------------

    async def submit(self, request: train_pb2.CreateTrainJobRequest) -> jobs_pb2.Job:
        """Check and queue a training job. Raises InvalidArgument (bad data, names, a base that
        cannot be trained on), ModelNotFound, AlreadyExists, MissingExtra, FailedPrecondition."""
        output = parse_model_name(request.output) if request.output else ""
        if not output:
            raise InvalidArgument("name the adapter model to make (output)", param="output")
        summary = await asyncio.to_thread(train_data.check, request.data)  # before anything exists
        base = await asyncio.to_thread(self.store.get, request.model)
        if not _is_hf_llm(base):
            hint = " (for a GGUF model, train on its Hugging Face format copy with gguf_base set to it)" \
                if base.format == assets_pb2.ARTIFACT_FORMAT_GGUF else ""
            raise InvalidArgument(f"model '{base.name}' is not a Hugging Face format LLM (safetensors), which "
                                  f"training needs{hint}", param="model")
        if request.gguf_base:
            gguf = await asyncio.to_thread(self.store.get, request.gguf_base)
            if gguf.format != assets_pb2.ARTIFACT_FORMAT_GGUF or gguf.kind not in (
                    assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_UNSPECIFIED):
                raise InvalidArgument(f"gguf_base '{gguf.name}' is not a GGUF LLM", param="gguf_base")
        await asyncio.to_thread(self._check_output, output, request.replace)
        if any(j.model == output for j in self.jobs.active(KIND)):
            raise FailedPrecondition(f"a training job making '{output}' is already running")
        entry = RUNTIMES["trainer"]
        if not library_available(entry.library) or not library_available("torch"):
            raise MissingExtra(entry.name, entry.extra)
        stored = train_pb2.CreateTrainJobRequest()
        stored.CopyFrom(request)
        stored.output = output
        stored.ClearField("data")  # the dataset is a file of the job, not a row of the index
        job_id = self.jobs.create(KIND, stored.SerializeToString(), output)
        work = self.root / job_id
        await asyncio.to_thread(_write_data, work / "data.jsonl", request.data)
        log.info("training job %s: %d examples (%s) on %s -> %s", job_id, summary.examples,
                 ", ".join(summary.kinds), base.name, output)
        self._start(job_id, stored)
        return await self.jobs.get(job_id)

    def _check_output(self, output: str, replace: bool) -> None:
        try:
            held = self.store.get(output)
        except OmgError:
            return
        if held.kind != assets_pb2.MODEL_KIND_ADAPTER or not held.adapter.job_id:
            raise AlreadyExists(f"model '{output}' already exists and was not made by training; pick another output")
        if not replace:
            raise AlreadyExists(f"adapter '{output}' already exists; set replace (omg train --replace) to train it again")

    # -- JobKind ----------------------------------------------------------------------------

    def resume(self, job_id: str, request: bytes) -> None:
        self._start(job_id, train_pb2.CreateTrainJobRequest.FromString(request))

    def describe(self, job: jobs_pb2.Job) -> None:
        row = self._db.execute("SELECT progress FROM train_progress WHERE job_id = ?", (job.id,)).fetchone()
        if row is not None:
            job.train.ParseFromString(row[0])

    async def _clean(self, key: WorkerKey, job_id: str) -> None:
        """An ended job's worker stopped (it may still be writing a checkpoint), then its files removed."""
        await asyncio.shield(self.orchestrator.stop_trainer(key, "training job ended"))
        await asyncio.to_thread(shutil.rmtree, self.root / job_id, True)

    def _persist(self, job_id: str, progress: jobs_pb2.TrainProgress) -> None:
        self._db.execute("INSERT OR REPLACE INTO train_progress(job_id, progress) VALUES (?, ?)",
                         (job_id, progress.SerializeToString()))

    # -- running ----------------------------------------------------------------------------

    def _start(self, job_id: str, request: train_pb2.CreateTrainJobRequest) -> None:
        self.jobs.start_task(job_id, lambda run: self._run(job_id, request, run))

    async def _run(self, job_id: str, request: train_pb2.CreateTrainJobRequest, run) -> None:
        subject = f"job:{job_id}"
        key = WorkerKey(request.output, run_spec_pb2.MODE_TRAINING, secondary=True)
        progress: jobs_pb2.TrainProgress = run.train
        reached = jobs_pb2.Job(id=job_id)
        self.describe(reached)  # what a previous daemon's run of this job reached
        progress.CopyFrom(reached.train)
        progress.base = request.model
        self.jobs.set_state(job_id, jobs_pb2.JOB_STATE_RUNNING)
        run.progress.changed()
        try:
            record = await self._train(job_id, request, run, key)
            self.jobs.set_state(job_id, jobs_pb2.JOB_STATE_DONE)
            self.events.publish(events_pb2.EVENT_KIND_TRAIN, f"trained {record.name}: {progress.step} steps, "
                                f"loss {progress.first_loss:.3f} -> {progress.loss:.3f}", subject=subject,
                                completed=progress.step, total=progress.total_steps, unit="steps", state="done")
            await self._clean(key, job_id)
        except asyncio.CancelledError:
            if not run.cancel.is_set():
                raise  # the daemon is stopping: the job stays "running" and resumes next start
            self.jobs.set_state(job_id, jobs_pb2.JOB_STATE_CANCELLED, "cancelled")
            self.events.publish(events_pb2.EVENT_KIND_TRAIN, f"training of {request.output} cancelled",
                                subject=subject, state="cancelled")
            await self._clean(key, job_id)
        except Exception as e:  # any failure, a bug included, fails the job: never left running
            failure = e if isinstance(e, OmgError) else None
            if failure is None:
                log.exception("training job %s crashed", job_id)
                failure = OmgError("the training failed unexpectedly (a bug: the daemon log has the details)")
            self.jobs.set_state(job_id, jobs_pb2.JOB_STATE_FAILED, failure.message)
            self.events.publish(events_pb2.EVENT_KIND_ERROR, f"training of {request.output} failed: {failure.message}",
                                subject=subject, level=events_pb2.LEVEL_ERROR)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.orchestrator.stop_trainer(key, "training job ended"))
            with contextlib.suppress(Exception):
                self._persist(job_id, progress)
            run.progress.changed()

    async def _train(self, job_id: str, request: train_pb2.CreateTrainJobRequest, run,
                     key: WorkerKey) -> assets_pb2.InstallRecord:
        base = await asyncio.to_thread(self.store.get, request.model)
        entry = RUNTIMES["trainer"]
        spec = spec_for(self.settings, base, entry)
        spec.mode = run_spec_pb2.MODE_TRAINING
        work = self.root / job_id
        train = runtime_pb2.TrainRequest(
            data_path=str(work / "data.jsonl"), checkpoint_dir=str(work / "checkpoints"),
            output_dir=str(work / "output"), options=request.options,
            gguf_adapter=GGUF_ADAPTER if request.gguf_base else "")
        restarts = 0
        while True:
            run.progress.note = "starting the trainer"
            run.progress.changed()
            worker = await self.orchestrator.start_trainer(key, entry, base, spec)
            try:
                final = await self._stream(job_id, request.output, worker, train, run)
                break
            except grpc.aio.AioRpcError as e:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(worker.exited.wait(), 2.0)
                if e.code() in _DEATH and not worker.alive and restarts < MAX_RESTARTS:
                    restarts += 1
                    log.warning("training job %s: the trainer %s; restarting it from the last checkpoint",
                                job_id, worker.exit_description())
                    self.events.publish(events_pb2.EVENT_KIND_TRAIN, f"training of {request.output}: the trainer "
                                        f"{worker.exit_description()}; resuming from step {run.train.checkpoint_step}",
                                        subject=f"job:{job_id}", level=events_pb2.LEVEL_WARNING)
                    continue
                if not worker.alive:
                    raise worker.death("while training") from None
                code = e.code()
                raise (InvalidArgument(e.details() or "bad training options") if code == grpc.StatusCode.INVALID_ARGUMENT
                       else OmgError(f"the trainer failed: {e.details()}")) from None
        run.progress.note = "registering the adapter"
        run.progress.changed()
        return await asyncio.to_thread(self._register, job_id, request, base, final)

    async def _stream(self, job_id: str, output: str, worker: Worker, train: runtime_pb2.TrainRequest,
                      run) -> runtime_pb2.TrainResponse:
        progress: jobs_pb2.TrainProgress = run.train
        last_event = 0.0
        final = None
        call = worker.stub.Train(train)
        try:
            async for m in call:
                if m.stage:
                    run.progress.note = m.stage
                if m.resumed_from_step:
                    progress.resumed_from_step = m.resumed_from_step
                if m.total_steps:
                    progress.total_steps = m.total_steps
                progress.step, progress.epoch = m.step, m.epoch
                if m.loss and not m.done:
                    progress.loss = m.loss
                    if not progress.first_loss:
                        progress.first_loss = m.loss
                if m.checkpoint_step:
                    progress.checkpoint_step = m.checkpoint_step
                    await asyncio.to_thread(self._persist, job_id, progress)
                run.progress.changed()
                now = time.monotonic()
                if m.loss and (now - last_event >= 0.5 or m.checkpoint_step):
                    last_event = now
                    self.events.publish(events_pb2.EVENT_KIND_TRAIN, f"training {output}: step "
                                        f"{m.step}/{m.total_steps} loss {m.loss:.4f}", subject=f"job:{job_id}",
                                        completed=m.step, total=m.total_steps, unit="steps", loss=f"{m.loss:.4f}")
                if m.done:
                    final = m
        finally:
            call.cancel()
        if final is None:
            raise OmgError("the trainer ended without finishing the adapter")
        return final

    def _register(self, job_id: str, request: train_pb2.CreateTrainJobRequest, base: assets_pb2.InstallRecord,
                  final: runtime_pb2.TrainResponse) -> assets_pb2.InstallRecord:
        """Move the adapter out of the job's directory and register it as model `output`."""
        source = self.root / job_id / "output"
        target = self.settings.home_path / "adapters" / job_id
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            source.rename(target)
        gguf = bool(request.gguf_base)
        fmt = assets_pb2.ARTIFACT_FORMAT_GGUF if gguf else assets_pb2.ARTIFACT_FORMAT_SAFETENSORS
        opts = request.options
        rank = opts.lora_rank or 8
        record = assets_pb2.InstallRecord(
            name=request.output, kind=assets_pb2.MODEL_KIND_ADAPTER, format=fmt,
            ref=assets_pb2.ModelRef(provider=assets_pb2.PROVIDER_LOCAL, repo=str(target),
                                    kind=assets_pb2.MODEL_KIND_ADAPTER),
            adapter=assets_pb2.AdapterInfo(
                base=request.gguf_base or base.name, method="lora", rank=rank,
                alpha=opts.lora_alpha if opts.HasField("lora_alpha") else 2.0 * rank,
                job_id=job_id, final_loss=final.loss, steps=final.step,
                gguf_adapter=GGUF_ADAPTER if gguf else ""))
        meta = target / "adapter_config.json"
        with contextlib.suppress(OSError, ValueError):
            record.adapter.target_modules.extend(json.loads(meta.read_text()).get("target_modules") or [])
        # Main artifact first: the GGUF LoRA for a GGUF base, else the PEFT weights.
        main = GGUF_ADAPTER if gguf else "adapter_model.safetensors"
        for p in sorted(target.iterdir(), key=lambda p: (p.name != main, p.name)):
            if not p.is_file():
                continue
            size = p.stat().st_size
            ffmt = format_of(p.name) if p.name in (main, "adapter_model.safetensors", GGUF_ADAPTER) \
                else assets_pb2.ARTIFACT_FORMAT_OTHER
            if p.name != main and ffmt == fmt:
                ffmt = assets_pb2.ARTIFACT_FORMAT_OTHER  # one main artifact of the record's format
            record.artifacts.add(filename=p.name, size=size, sha256=sha256_file(p), format=ffmt, local_path=str(p))
            record.size_bytes += size
        record.created_at.CopyFrom(timestamp())
        self.store.put(record)
        return record


def _write_data(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
