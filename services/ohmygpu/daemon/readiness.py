"""Whether the daemon has finished starting: what `GET /readyz` answers and GetHealth reports.

The daemon is ready once every required step of its start is done: the store is open, the
listeners are up, and the runs pinned before a restart have been tried (a run that could not be
restored is marked failed; trying is what counts, not succeeding). A step that fails, or the
daemon stopping, makes it not ready, with the reason. Pure: no I/O, the server marks the steps.
"""

from __future__ import annotations

from dataclasses import dataclass

# The steps of a start, in order; a daemon is ready when each is done.
STORE = "store"
LISTENERS = "listeners"
RUNS = "runs"
REQUIRED = (STORE, LISTENERS, RUNS)

_WAITING = {STORE: "opening the store", LISTENERS: "starting the listeners",
            RUNS: "restoring the runs pinned before the restart"}


@dataclass(frozen=True)
class State:
    """Ready or not, and why not (empty when ready)."""

    ready: bool
    reason: str


class Readiness:
    """The steps of the daemon's start that are done, failed or still to come."""

    def __init__(self, required: tuple[str, ...] = REQUIRED) -> None:
        self._required = required
        self._done: set[str] = set()
        self._failed: dict[str, str] = {}  # step -> why
        self._stopping = False

    def done(self, step: str) -> None:
        """Step `step` has finished (again, after a failure)."""
        self._done.add(step)
        self._failed.pop(step, None)

    def fail(self, step: str, why: str) -> None:
        """Step `step` failed: not ready until it is done again."""
        self._failed[step] = why
        self._done.discard(step)

    def stopping(self) -> None:
        """The daemon is shutting down: not ready from now on."""
        self._stopping = True

    def state(self) -> State:
        """Ready, or the first reason it is not: stopping, a failed step, a step not yet done."""
        if self._stopping:
            return State(False, "shutting down")
        for step in self._required:
            if step in self._failed:
                return State(False, f"{step} failed: {self._failed[step]}")
        for step in self._required:
            if step not in self._done:
                return State(False, _WAITING.get(step, f"waiting for {step}"))
        return State(True, "")
