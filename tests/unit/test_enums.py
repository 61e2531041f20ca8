"""core/enums.py: one way to show an enum value, for every enum of the contract."""

from __future__ import annotations

import pytest
from ohmygpu.api.v1 import jobs_pb2, runs_pb2
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.enums import enum_name
from ohmygpu.events.v1 import events_pb2
from ohmygpu.run.v1 import run_spec_pb2


@pytest.mark.parametrize("enum", [jobs_pb2.JobState, runs_pb2.RunState, assets_pb2.ModelKind,
                                  assets_pb2.ArtifactFormat, events_pb2.EventKind, run_spec_pb2.Mode])
def test_every_value_loses_its_enum_prefix(enum) -> None:
    prefix = enum.DESCRIPTOR.values_by_number[0].name.removesuffix("UNSPECIFIED")
    for value in enum.DESCRIPTOR.values:
        word = enum_name(enum, value.number)
        assert word == value.name.removeprefix(prefix).lower() and word.islower()
        assert not word.startswith(prefix.lower())


def test_examples_and_unknown_values() -> None:
    assert enum_name(jobs_pb2.JobState, jobs_pb2.JOB_STATE_RUNNING) == "running"
    assert enum_name(assets_pb2.ArtifactFormat, assets_pb2.ARTIFACT_FORMAT_GGUF) == "gguf"
    assert enum_name(run_spec_pb2.Mode, run_spec_pb2.MODE_EMBEDDINGS) == "embeddings"
    assert enum_name(jobs_pb2.JobState, 999) == "999"  # from a newer peer: shown, not a crash
