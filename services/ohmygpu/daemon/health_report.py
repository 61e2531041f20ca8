"""The daemon's health (SystemService.GetHealth, `GET /v1/health`), from what it tracks already.

Nothing here asks a worker anything: the answer comes from the orchestrator's pool and start
locks, the health patrol's missed checks, crash counts and failed models, the queues and the
nodes, so a hung worker cannot delay it (the patrol is what notices one).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ohmygpu.api.v1 import system_pb2
from ohmygpu.core.index_db import timestamp
from ohmygpu.core.version import __version__

if TYPE_CHECKING:
    from ohmygpu.daemon.orchestrator import Orchestrator
    from ohmygpu.daemon.readiness import Readiness

_S = system_pb2.WorkerHealthState


def health_report(orchestrator: Orchestrator, readiness: Readiness, started_at: float,
                  now: float | None = None) -> system_pb2.GetHealthResponse:
    """Readiness, each node, each worker (and each model loading, lately lost or failed); status
    "ok" when ready with every node up and every worker ready or on its first load."""
    o = orchestrator
    now = time.time() if now is None else now
    state = readiness.state()
    out = system_pb2.GetHealthResponse(version=__version__, started_at=timestamp(started_at),
                                       uptime_seconds=max(0.0, now - started_at),
                                       ready=state.ready, not_ready_reason=state.reason)
    workers = dict(o.workers.items())
    for node in list(o.nodes):
        entry = out.nodes.add(name=node.name, state="up" if node.up else "down",
                              reason="" if node.up else getattr(node, "down_reason", ""),
                              workers=sum(1 for w in workers.values() if w.node == node.index and w.alive))
        heartbeat = getattr(node, "last_heartbeat", 0.0)  # remote nodes only
        if heartbeat:
            entry.last_heartbeat.CopyFrom(timestamp(heartbeat))
    loading = set(o.loading())
    for key, w in workers.items():
        entry = out.workers.add(model=key.model, mode=key.mode, node=o.node_name(w.node), pid=w.pid,
                                restarts=o.health.deaths[key], in_flight=w.in_flight,
                                queued=o.queued(key), device=w.device)
        missed = o.health.misses.get(w.id, 0)
        if key in loading:
            entry.state = _S.WORKER_HEALTH_STATE_RESTARTING if not w.alive else _S.WORKER_HEALTH_STATE_LOADING
            entry.reason = "reloading"
        elif not w.alive:
            entry.state = _S.WORKER_HEALTH_STATE_UNHEALTHY
            entry.reason = f"the worker {w.exit_description()}; the next request starts a new one"
        elif missed:
            entry.state = _S.WORKER_HEALTH_STATE_UNHEALTHY
            entry.reason = f"missed {missed} health check(s) in a row"
        else:
            entry.state = _S.WORKER_HEALTH_STATE_READY
    for key in sorted(loading - workers.keys(), key=str):
        why = o.health.recently_down(key)
        out.workers.add(model=key.model, mode=key.mode, restarts=o.health.deaths[key], queued=o.queued(key),
                        state=_S.WORKER_HEALTH_STATE_RESTARTING if why else _S.WORKER_HEALTH_STATE_LOADING,
                        reason=f"after: {why}" if why else "")
    for key in sorted(o.health.down.keys() - workers.keys() - loading - o.health.failed.keys(), key=str):
        why = o.health.recently_down(key)
        if why:
            out.workers.add(model=key.model, mode=key.mode, restarts=o.health.deaths[key], queued=o.queued(key),
                            state=_S.WORKER_HEALTH_STATE_UNHEALTHY,
                            reason=f"{why}; the next request starts a new one")
    for key, why in sorted(o.health.failed.items(), key=lambda kv: str(kv[0])):
        if key not in workers:
            out.workers.add(model=key.model, mode=key.mode, restarts=o.health.deaths[key],
                            state=_S.WORKER_HEALTH_STATE_FAILED, reason=why)
    fine = (_S.WORKER_HEALTH_STATE_READY, _S.WORKER_HEALTH_STATE_LOADING)  # a first load is no fault
    healthy = state.ready and all(n.state == "up" for n in out.nodes) and all(w.state in fine for w in out.workers)
    out.status = "ok" if healthy else "degraded"
    return out
