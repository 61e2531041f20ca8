"""ChatService (Chat, Complete, CountTokens), EmbeddingService, AudioService and ImageService
of the daemon API: inference by model name, streamed straight from the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ohmygpu.api.v1 import audio_pb2
from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge
from ohmygpu.core.settings import Settings
from ohmygpu.daemon.orchestrator import Orchestrator
from ohmygpu.daemon.speech import list_voices
from ohmygpu.runtime.v1 import runtime_pb2


def check_messages(request: runtime_pb2.ChatRequest) -> None:
    """The one empty-messages rule, for every edge (gRPC Chat, OpenAI's chat completions);
    Ollama's empty /api/chat is a load, never a ChatRequest. Raises InvalidArgument."""
    if not request.messages:
        raise InvalidArgument("'messages' must be a non-empty array", param="messages")


class Inference:
    """Chat, Complete, CountTokens, Embed, Transcribe, Speak, ListVoices, GenerateImage."""

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

    async def CountTokens(self, request: runtime_pb2.CountTokensRequest) -> runtime_pb2.CountTokensResponse:
        check_messages(request.chat)
        return await self.orchestrator.count_tokens(request)

    async def Embed(self, request: runtime_pb2.EmbedRequest) -> runtime_pb2.EmbedResponse:
        return await self.orchestrator.embed(request)

    async def GenerateImage(self, request: runtime_pb2.GenerateImageRequest,
                            ) -> AsyncIterator[runtime_pb2.GenerateImageResponse]:
        async for message in self.orchestrator.generate_image(request):
            yield message

    async def Speak(self, request: runtime_pb2.SpeakRequest) -> AsyncIterator[runtime_pb2.SpeakResponse]:
        async for message in self.orchestrator.speak(request):
            yield message

    async def ListVoices(self, request: runtime_pb2.ListVoicesRequest) -> runtime_pb2.ListVoicesResponse:
        return await asyncio.to_thread(list_voices, self.orchestrator.store, request.model)

    async def Transcribe(self, request: audio_pb2.TranscribeRequest) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        """The audio comes as bytes and is held in a private file while the worker reads it."""
        if not request.audio:
            raise InvalidArgument("the audio file is empty", param="audio")
        if len(request.audio) > self.audio_limit:
            raise PayloadTooLarge(f"audio of {len(request.audio)} bytes is over the {self.audio_limit} byte limit "
                                  "(OMG_MAX_AUDIO_MB)")
        with self.orchestrator.uploads.holding(request.audio) as path:
            async for message in self.orchestrator.transcribe(worker_request(request), path):
                yield message


def worker_request(request: audio_pb2.TranscribeRequest) -> runtime_pb2.TranscribeRequest:
    """The worker's TranscribeRequest for a caller's, without the audio (the daemon hands the
    worker a file it owns, never one a caller names: the API message has no path to name)."""
    out = runtime_pb2.TranscribeRequest(
        model=request.model, language=request.language, initial_prompt=request.initial_prompt,
        translate=request.translate, word_timestamps=request.word_timestamps,
        beam_size=request.beam_size, vad_filter=request.vad_filter, keep_alive=request.keep_alive)
    if request.HasField("temperature"):
        out.temperature = request.temperature
    return out
