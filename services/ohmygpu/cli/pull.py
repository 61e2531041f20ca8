"""`omg pull SOURCE`: start a pull job on the daemon and show its progress (a bar per file and
one overall) until it ends; Ctrl-C leaves the job running in the daemon."""

from __future__ import annotations

import sys

from ohmygpu.api.v1 import jobs_pb2, models_pb2
from ohmygpu.cli.client import Client, CliError
from ohmygpu.core.enums import enum_name


def run_pull(client: Client, request: models_pb2.InstallModelRequest, *, quiet: bool = False) -> int:
    job: jobs_pb2.Job = client.call(client.models.InstallModel, request, timeout=60)
    call = client.stream(client.jobs.WatchJob, jobs_pb2.WatchJobRequest(id=job.id))
    if quiet or not sys.stderr.isatty():
        last = job
        for last in client.iterate(call):
            pass
        return _finish(last)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    last = job
    try:
        with Progress(*columns, transient=False) as bars:
            tasks: dict[str, int] = {}
            overall = bars.add_task("total", total=None)
            for last in client.iterate(call):
                for f in last.files:
                    if f.filename not in tasks:
                        tasks[f.filename] = bars.add_task(f.filename[-40:], total=f.total or None)
                    bars.update(tasks[f.filename], completed=f.completed)
                bars.update(overall, completed=last.completed_bytes, total=last.total_bytes or None)
    except KeyboardInterrupt:
        call.cancel()
        print(f"\nthe pull goes on in the daemon: `omg job cancel {job.id}` stops it", file=sys.stderr)
        return 130
    return _finish(last)


def _finish(job: jobs_pb2.Job) -> int:
    if job.message:
        print(job.message, file=sys.stderr)
    if job.state == jobs_pb2.JOB_STATE_DONE:
        print(f"pulled {job.model} ({job.total_bytes / 1e6:.1f} MB, {job.downloaded_bytes / 1e6:.1f} MB downloaded)")
        return 0
    raise CliError(f"pull {job.id} {enum_name(jobs_pb2.JobState, job.state)}: "
                   f"{job.error or 'no reason given'}")
