"""What every HTTP dialect needs from the daemon, in one object."""

from __future__ import annotations

from dataclasses import dataclass

from ohmygpu.core.settings import Settings
from ohmygpu.daemon.api import DaemonAPI
from ohmygpu.gateway.body import BodyLimits


@dataclass
class Gateway:
    """The daemon's settings and its API (daemon/api/): the only way the HTTP layer reaches in."""

    settings: Settings
    api: DaemonAPI

    @property
    def body_limit(self) -> BodyLimits:
        """What one JSON request body may hold (gateway/body.py reads every one)."""
        return BodyLimits(self.settings.max_body_mb << 20, self.settings.max_messages,
                          self.settings.max_text_chars)
