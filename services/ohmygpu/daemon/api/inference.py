"""ChatService, EmbeddingService and AudioService of the daemon API: inference by model name,
streamed straight from the worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.runtime.v1 import runtime_pb2


def check_messages(request: runtime_pb2.ChatRequest) -> None:
    """The one empty-messages rule, for every edge (gRPC Chat, OpenAI's chat completions);
    Ollama's empty /api/chat is a load, never a ChatRequest. Raises InvalidArgument."""
    if not request.messages:
        raise InvalidArgument("'messages' must be a non-empty array", param="messages")


class Inference:
    """Chat, Complete, Embed, Transcribe."""

    def __init__(self, settings: Settings, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.audio_limit = settings.max_audio_mb << 20

    async def Chat(self, request: runtime_pb2.ChatRequest) -> AsyncIterator[runtime_pb2.ChatResponse]:
        check_messages(request)
        async for message in self.orchestrator.chat(request):
            yield message

    async def Complete(self, request: runtime_pb2.CompleteRequest) -> AsyncIterator[runtime_pb2.CompleteResponse]:
        async for message in self.orchestrator.complete(request):
            yield message

    async def Embed(self, request: runtime_pb2.EmbedRequest) -> runtime_pb2.EmbedResponse:
        return await self.orchestrator.embed(request)

    async def Transcribe(self, request: runtime_pb2.TranscribeRequest) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        """The audio comes as bytes and is held in a private file while the worker reads it."""
        if request.audio_path:
            # A client-chosen path would let a remote caller make the daemon read any file.
            raise InvalidArgument("audio_path is for the daemon's own use; send the file's bytes in 'audio'",
                                  param="audio_path")
        if not request.audio:
            raise InvalidArgument("the audio file is empty", param="audio")
        if len(request.audio) > self.audio_limit:
            raise PayloadTooLarge(f"audio of {len(request.audio)} bytes is over the {self.audio_limit} byte limit "
                                  "(OMG_MAX_AUDIO_MB)")
        with self.orchestrator.uploads.holding(request.audio) as path:
            request.ClearField("audio")
            async for message in self.orchestrator.transcribe(request, path):
                yield message
