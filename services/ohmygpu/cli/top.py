"""`omg top`: a full-screen live view of the daemon, in the spirit of nvidia-smi and k9s.

Devices (memory bars, utilisation, temperature), loaded models (mode, device, memory, requests
in flight and queued, tokens/s of the last generation, expiry), jobs (pulls with progress bars
and rates, training with its step and loss), runs, image generations step by step, and the
latest events. The event stream wakes a refresh at once; a poll every
`interval` seconds fills in the rest; the reads of one refresh go out together, so a refresh costs
one round trip and a slow or remote link a few small calls a second (the header shows how long
the last refresh took).
Keys: up/down (or j/k) select a row, u unloads the selected model, s stops the selected run,
c cancels the selected pull, q quits.
"""

from __future__ import annotations

import collections
import os
import select
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ohmygpu.api.v1 import (
    events_pb2,
    events_pb2_grpc,
    jobs_pb2,
    runs_pb2,
    runs_pb2_grpc,
    system_pb2,
)
from ohmygpu.cli.client import Client, CliError
from ohmygpu.cli.format import size as _size
from ohmygpu.core.enums import enum_name
from ohmygpu.events.v1 import events_pb2 as event_pb2
from ohmygpu.run.v1 import run_spec_pb2

_ACTIVE_JOBS = (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING)
_MODES = {run_spec_pb2.MODE_EMBEDDINGS: "embed", run_spec_pb2.MODE_TRANSCRIPTION: "speech"}


@dataclass
class Generation:
    """An image generation as its events tell it."""

    model: str
    images: int = 1
    image: int = 1  # the image being denoised, from 1
    step: int = 0
    steps: int = 0
    started: float = field(default_factory=time.monotonic)


def track_generation(generations: dict[str, Generation], event: event_pb2.Event) -> None:
    """Fold one EVENT_KIND_GENERATION event into `generations`: started adds a row, progress
    moves it, done, failed or cancelled removes it."""
    attrs, subject = event.attributes, event.subject
    state = attrs.get("state", "")
    if state == "started":
        generations[subject] = Generation(model=subject.removeprefix("model:"),
                                          images=int(attrs.get("images", "1") or 1))
    elif state == "progress":
        g = generations.setdefault(subject, Generation(model=subject.removeprefix("model:")))
        g.step, g.steps = int(event.progress.completed), int(event.progress.total)
        g.image = int(attrs.get("image", g.image) or g.image)
        g.images = int(attrs.get("images", g.images) or g.images)
    else:
        generations.pop(subject, None)


@dataclass
class Snapshot:
    """What the screen shows, refreshed from the daemon."""

    devices: system_pb2.ListDevicesResponse = field(default_factory=system_pb2.ListDevicesResponse)
    loaded: list[system_pb2.LoadedModel] = field(default_factory=list)
    jobs: list[jobs_pb2.Job] = field(default_factory=list)
    runs: list[runs_pb2.Run] = field(default_factory=list)
    nodes: list[system_pb2.Node] = field(default_factory=list)  # the daemon's machine and its nodes
    # Image generations under way, by subject ("model:NAME"), from the event stream (they are
    # requests, not jobs): what each has done.
    generations: dict[str, Generation] = field(default_factory=dict)
    # (subject, is progress, line), newest first
    events: collections.deque[tuple[str, bool, str]] = field(default_factory=lambda: collections.deque(maxlen=8))
    error: str = ""
    note: str = ""
    updated: float = 0.0
    refresh_s: float = 0.0  # how long the last refresh took: the link's round trip, as the user feels it

    def rows(self) -> list[tuple[str, str]]:
        """Selectable rows in screen order: ("model", name), ("run", id), ("job", id)."""
        return ([("model", m.name) for m in self.loaded] + [("run", r.id) for r in self.runs]
                + [("job", j.id) for j in self.jobs])


class Top:
    """The view's state, its refresh threads and its keys."""

    def __init__(self, client: Client, interval: float = 1.0) -> None:
        self.client = client
        self.runs = runs_pb2_grpc.RunServiceStub(client.channel)  # the Client has no runs stub
        self.interval = interval
        self.snap = Snapshot()
        self.selected = 0
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def refresh(self) -> None:
        c, md = self.client, self.client.metadata
        started = time.monotonic()
        # The reads go out together on the one HTTP/2 connection: a refresh costs one round
        # trip, not four, which is what keeps the view live over a remote or slow link.
        calls = (
            c.system.ListDevices.future(system_pb2.ListDevicesRequest(), timeout=5, metadata=md),
            c.system.ListLoaded.future(system_pb2.ListLoadedRequest(), timeout=5, metadata=md),
            c.jobs.ListJobs.future(jobs_pb2.ListJobsRequest(), timeout=5, metadata=md),
            self.runs.ListRuns.future(runs_pb2.ListRunsRequest(), timeout=5, metadata=md),
            c.system.ListNodes.future(system_pb2.ListNodesRequest(), timeout=5, metadata=md),
        )
        try:
            devices, loaded, jobs, runs, nodes = (call.result() for call in calls)
        except Exception as e:  # a flaky link shows as a line on the screen, never a crash
            with self.lock:
                self.snap.error = f"daemon at {c.addr} not answering ({type(e).__name__}); retrying"
            return
        with self.lock:
            self.snap.devices, self.snap.loaded = devices, list(loaded.models)
            self.snap.nodes = list(nodes.nodes)
            self.snap.jobs = [j for j in jobs.jobs if j.state in _ACTIVE_JOBS]
            self.snap.runs = [r for r in runs.runs if r.state in (runs_pb2.RUN_STATE_STARTING, runs_pb2.RUN_STATE_RUNNING)]
            self.snap.error, self.snap.updated = "", time.time()
            self.snap.refresh_s = time.monotonic() - started

    def poll_loop(self) -> None:
        while not self.stop.is_set():
            self.refresh()
            self.wake.wait(self.interval)
            self.wake.clear()

    def event_loop(self) -> None:
        stub = events_pb2_grpc.EventServiceStub(self.client.channel)
        while not self.stop.is_set():
            try:
                for event in stub.StreamEvents(events_pb2.StreamEventsRequest(), metadata=self.client.metadata):
                    stamp = time.strftime("%H:%M:%S", time.localtime(event.time.seconds))
                    progress = event.HasField("progress")
                    line = f"{stamp}  {event.message}"
                    if progress and event.progress.total:
                        line += f" ({100 * event.progress.completed / event.progress.total:.0f}%)"
                    with self.lock:
                        if event.kind == event_pb2.EVENT_KIND_GENERATION:
                            track_generation(self.snap.generations, event)
                        # A pull reports progress twice a second: its latest line replaces the
                        # previous one instead of pushing every other event off the list.
                        if progress and event.subject:
                            kept = [e for e in self.snap.events if not (e[1] and e[0] == event.subject)]
                            self.snap.events.clear()
                            self.snap.events.extend(kept)
                        self.snap.events.appendleft((event.subject, progress, line))
                    self.wake.set()  # something changed: refresh now
                    if self.stop.is_set():
                        return
            except Exception:  # the stream broke (daemon restarting, link down): reconnect
                time.sleep(1)

    def act(self, key: str) -> None:
        rows = self.snap.rows()
        if key in ("j", "down"):
            self.selected = min(self.selected + 1, max(0, len(rows) - 1))
        elif key in ("k", "up"):
            self.selected = max(0, self.selected - 1)
        if not rows or key not in ("u", "s", "c"):
            return
        kind, ident = rows[min(self.selected, len(rows) - 1)]
        c = self.client
        try:
            if key == "u" and kind == "model":
                c.call(c.system.UnloadModel, system_pb2.UnloadModelRequest(name=ident))
                note = f"unloaded {ident}"
            elif key == "s" and kind == "run":
                c.call(self.runs.StopRun, runs_pb2.StopRunRequest(id=ident))
                note = f"stopped run {ident}"
            elif key == "c" and kind == "job":
                c.call(c.jobs.CancelJob, jobs_pb2.CancelJobRequest(id=ident))
                note = f"cancelled pull {ident}"
            else:
                note = {"u": "u unloads a model row", "s": "s stops a run row", "c": "c cancels a pull row"}[key]
        except CliError as e:
            note = e.message
        with self.lock:
            self.snap.note = note
        self.wake.set()

    def render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        with self.lock:
            s = self.snap
            rows = s.rows()
            selected = rows[min(self.selected, len(rows) - 1)] if rows else None
            header = Text(f"omg top — {self.client.addr}   {time.strftime('%H:%M:%S')}   "
                          f"refresh {s.refresh_s * 1000:.0f} ms   "
                          "↑/↓ select  u unload  s stop run  c cancel pull  q quit", style="bold")
            parts: list[Any] = [header]
            if s.error:
                parts.append(Text(s.error, style="red"))
            devices = Table(title="devices", title_justify="left", expand=True)
            for col in ("DEVICE", "MEMORY", "", "UTIL", "TEMP"):
                devices.add_column(col)
            d = s.devices
            if d.ram_total:
                used = d.ram_total - d.ram_available
                devices.add_row(f"cpu ({d.cpu_count} threads)", f"{_size(used)} / {_size(d.ram_total)}",
                                ProgressBar(total=d.ram_total, completed=used, width=30), f"{d.cpu_percent:.0f}%", "")
            for g in d.gpus:
                devices.add_row(f"cuda:{g.index} {g.name}", f"{_size(g.memory_used)} / {_size(g.memory_total)}",
                                ProgressBar(total=g.memory_total or 1, completed=g.memory_used, width=30),
                                f"{g.utilization}%", f"{g.temperature}°C")
            parts.append(devices)
            if len(s.nodes) > 1:  # the daemon's machine alone is the devices table above
                nodes = Table(title="nodes", title_justify="left", expand=True)
                for col in ("NODE", "STATE", "DEVICES", "BUDGET USED", "", "LOADED", "HEARTBEAT"):
                    nodes.add_column(col)
                for n in s.nodes:
                    beat = "-" if not n.last_heartbeat.seconds else \
                        f"{max(0.0, time.time() - n.last_heartbeat.ToNanoseconds() / 1e9):.1f}s"
                    gpus = "".join(f" + {g.name}" for g in n.gpus)
                    nodes.add_row(n.name, n.state, f"{n.cpu_count} CPU{gpus}",
                                  f"{_size(n.ram_used)} / {_size(n.ram_budget)}",
                                  ProgressBar(total=n.ram_budget or 1, completed=n.ram_used, width=20),
                                  ", ".join(n.loaded) or "-", beat, style="red" if n.state != "up" else "")
                parts.append(nodes)
            models = Table(title="loaded models", title_justify="left", expand=True)
            for col in ("MODEL", "MODE", "NODE", "DEVICE", "MEMORY", "IN FLIGHT", "QUEUED", "TOK/S", "UNTIL"):
                models.add_column(col)
            for m in s.loaded:
                until = "forever" if not m.HasField("expires_at") else \
                    f"{max(0, int(m.expires_at.seconds - time.time()))}s"
                style = "reverse" if selected == ("model", m.name) else ""
                models.add_row(m.name, _MODES.get(m.mode, "chat"), m.node or "local", m.device,
                               _size(m.memory_bytes), str(m.in_flight),
                               str(m.queued), f"{m.tokens_per_second:.1f}" if m.tokens_per_second else "-", until,
                               style=style)
            parts.append(models)
            if s.runs:
                runs = Table(title="runs", title_justify="left", expand=True)
                for col in ("RUN", "MODEL", "STATE", "PID"):
                    runs.add_column(col)
                for r in s.runs:
                    runs.add_row(r.id, r.model, enum_name(runs_pb2.RunState, r.state),
                                 str(r.pid or "-"), style="reverse" if selected == ("run", r.id) else "")
                parts.append(runs)
            pulls = Table(title="jobs (pulls, training)", title_justify="left", expand=True)
            for col in ("JOB", "MODEL", "", "DONE", "RATE", "ETA"):
                pulls.add_column(col)
            for j in s.jobs:
                if j.kind == "train":  # a training job: steps for bytes, the loss for the rate
                    t = j.train
                    pulls.add_row(j.id, f"{j.model} (train)", ProgressBar(total=t.total_steps or None, completed=t.step,
                                                                          width=30),
                                  f"step {t.step}/{t.total_steps or '?'}", f"loss {t.loss:.3f}" if t.loss else "-", "-",
                                  style="reverse" if selected == ("job", j.id) else "")
                    continue
                pulls.add_row(j.id, j.model, ProgressBar(total=j.total_bytes or None, completed=j.completed_bytes, width=30),
                              f"{_size(j.completed_bytes)} / {_size(j.total_bytes)}",
                              f"{_size(j.rate_bytes_per_second)}/s", f"{j.eta_seconds:.0f}s" if j.eta_seconds else "-",
                              style="reverse" if selected == ("job", j.id) else "")
            parts.append(pulls)
            if s.generations:
                images = Table(title="image generations", title_justify="left", expand=True)
                for col in ("MODEL", "IMAGE", "", "STEP", "ELAPSED"):
                    images.add_column(col)
                for g in s.generations.values():
                    images.add_row(g.model, f"{g.image}/{g.images}",
                                   ProgressBar(total=g.steps or None, completed=g.step, width=30),
                                   f"{g.step}/{g.steps or '?'}", f"{time.monotonic() - g.started:.0f}s")
                parts.append(images)
            parts.append(Text("recent events", style="bold"))
            parts.extend(Text(line) for _, _, line in list(s.events))
            if s.note:
                parts.append(Text(s.note, style="yellow"))
        return Group(*parts)


def _keys(stop: threading.Event, top: Top) -> None:
    """Read keys from the terminal in cbreak mode until q."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 16).decode(errors="ignore")
            if data.startswith("\x1b["):
                top.act({"A": "up", "B": "down"}.get(data[2:3], ""))
                continue
            for ch in data:
                if ch in ("q", "\x03"):
                    stop.set()
                    return
                top.act(ch)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_top(client: Client, interval: float = 1.0) -> int:
    from rich.live import Live

    # A daemon that is not there fails fast, like every command; once running, the view rides
    # out disconnects (a restart, a flaky link) and says so on screen.
    client.call(client.system.GetVersion, system_pb2.GetVersionRequest(), timeout=5)
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise CliError("omg top needs a terminal; use `omg ps --json` or `omg events --json` in scripts")
    top = Top(client, interval)
    top.refresh()
    for target in (top.poll_loop, top.event_loop):
        threading.Thread(target=target, daemon=True).start()
    with Live(top.render(), screen=True, auto_refresh=False, transient=True) as live:
        keys = threading.Thread(target=_keys, args=(top.stop, top), daemon=True)
        keys.start()
        while not top.stop.is_set():
            live.update(top.render(), refresh=True)
            top.stop.wait(0.25)
        top.wake.set()
    return 0
