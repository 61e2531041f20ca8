"""RunService and EventService of the daemon API: pinned runs and the event stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ohmygpu.api.v1 import events_pb2, runs_pb2
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.runs import RunManager
from ohmygpu.events.v1 import events_pb2 as event_pb2


class Runs:
    """Runs: pinned models with their load options."""

    def __init__(self, runs: RunManager) -> None:
        self.runs = runs

    async def CreateRun(self, request: runs_pb2.CreateRunRequest) -> runs_pb2.Run:
        return await self.runs.create(request.spec)

    async def ListRuns(self, request: runs_pb2.ListRunsRequest) -> runs_pb2.ListRunsResponse:
        return runs_pb2.ListRunsResponse(runs=await self.runs.list())

    async def GetRun(self, request: runs_pb2.GetRunRequest) -> runs_pb2.Run:
        return await self.runs.get(request.id)

    async def StopRun(self, request: runs_pb2.StopRunRequest) -> runs_pb2.Run:
        return await self.runs.stop(request.id)

    async def StreamRunLogs(self, request: runs_pb2.StreamRunLogsRequest) -> AsyncIterator[runs_pb2.RunLogLine]:
        async for line in self.runs.logs(request.id, follow=request.follow):
            yield runs_pb2.RunLogLine(line=line)


class Events:
    """The event stream."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def StreamEvents(self, request: events_pb2.StreamEventsRequest) -> AsyncIterator[event_pb2.Event]:
        async for event in self.bus.subscribe(after_id=request.after_id, kinds=set(request.kinds)):
            yield event
