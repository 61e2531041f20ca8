"""What every HTTP dialect needs from the daemon, in one object."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.gateway.body import BodyLimits


@dataclass
class Gateway:
    """The daemon's parts the HTTP layer calls into."""

    settings: Settings
    orchestrator: Orchestrator
    store: ModelStore
    services: dict[str, Any]  # servicer objects by short name: models, chat, system

    @property
    def body_limit(self) -> BodyLimits:
        """What one JSON request body may hold (gateway/body.py reads every one)."""
        return BodyLimits(self.settings.max_body_mb << 20, self.settings.max_messages,
                          self.settings.max_text_chars)

    async def list_records(self) -> list[assets_pb2.InstallRecord]:
        return await asyncio.to_thread(self.store.list)

    async def get_record(self, name: str) -> assets_pb2.InstallRecord:
        return await asyncio.to_thread(self.store.get, name)

    async def call(self, service: str, method: str, request: Any) -> Any:
        """Call a unary servicer method in-process (the same code gRPC clients reach)."""
        servicer = self.services[service]
        fn = getattr(type(servicer), method).__wrapped__
        return await fn(servicer, request, None)
