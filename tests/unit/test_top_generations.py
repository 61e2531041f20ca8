"""`omg top`'s image generation rows, folded from the daemon's EVENT_KIND_GENERATION events."""

from __future__ import annotations

from ohmygpu.events.v1 import events_pb2
from ohmygpu.cli.top import Generation, track_generation


def _event(state: str, completed: int = 0, total: int = 0, **attrs: str) -> events_pb2.Event:
    return events_pb2.Event(kind=events_pb2.EVENT_KIND_GENERATION, subject="model:sd",
                            attributes={"state": state, **attrs},
                            progress=events_pb2.Progress(completed=completed, total=total, unit="steps"))


def test_a_generation_is_added_moved_and_removed() -> None:
    rows: dict[str, Generation] = {}
    track_generation(rows, _event("started", images="2"))
    assert rows["model:sd"].model == "sd" and rows["model:sd"].images == 2 and rows["model:sd"].step == 0
    track_generation(rows, _event("progress", 3, 20, image="2", images="2"))
    g = rows["model:sd"]
    assert (g.image, g.images, g.step, g.steps) == (2, 2, 3, 20)
    track_generation(rows, _event("done", images="2"))
    assert rows == {}


def test_progress_seen_before_its_start_still_shows_and_failures_end_it() -> None:
    rows: dict[str, Generation] = {}
    track_generation(rows, _event("progress", 1, 4, image="1", images="1"))  # top started mid-generation
    assert rows["model:sd"].steps == 4
    track_generation(rows, _event("failed"))
    assert rows == {}
