"""OpenAI's text to speech API: POST /v1/audio/speech (JSON in, the audio out, streamed as the
worker makes it, or SSE `speech.audio.delta` events with `stream_format: "sse"`), and GET
/v1/audio/voices (the voices of the store's speech models; not OpenAI's, the shape
Kokoro-FastAPI and speaches serve).

`tts-1`, `tts-1-hd` and `gpt-4o-mini-tts` mean OMG_TTS_MODEL or the first installed speech
model, and OpenAI's voice names (alloy, ...) the model's first voice (the daemon's rules,
daemon/speech.py). The first audio is awaited before the response starts, so a bad voice, an
unknown model or text the phonemizer cannot read is a 400 in OpenAI's envelope, not a broken
stream; a client that goes away cancels the synthesis at its next sentence.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

from ohmygpu.core.errors import InvalidArgument, OmgError
from ohmygpu.gateway.body import Fields, FieldTable, read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.streaming import ClosingStreamingResponse, primed
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ENCODINGS = {
    "mp3": runtime_pb2.AUDIO_ENCODING_MP3, "opus": runtime_pb2.AUDIO_ENCODING_OPUS,
    "aac": runtime_pb2.AUDIO_ENCODING_AAC, "flac": runtime_pb2.AUDIO_ENCODING_FLAC,
    "wav": runtime_pb2.AUDIO_ENCODING_WAV, "pcm": runtime_pb2.AUDIO_ENCODING_PCM,
}
FIELDS = FieldTable(
    what="speech",
    honoured=frozenset({"model", "input", "voice", "response_format", "speed", "stream_format",
                        "language", "keep_alive"}),
    refused={"instructions": "these voices take no style instructions (Piper and Kokoro models speak "
                             "the text as written); leave it out"},
)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def speak_request(body: dict) -> tuple[runtime_pb2.SpeakRequest, bool]:
    """The daemon's SpeakRequest for an OpenAI speech body, and whether it asked for SSE.
    Raises InvalidArgument naming the field."""
    FIELDS.check(body)
    f = Fields(body)
    fmt = f.str("response_format", default="mp3")
    if fmt not in ENCODINGS:
        raise InvalidArgument(f"'response_format' must be one of {', '.join(ENCODINGS)}", param="response_format")
    stream_format = f.str("stream_format", default="audio")
    if stream_format not in ("audio", "sse"):
        raise InvalidArgument("'stream_format' must be audio or sse", param="stream_format")
    req = runtime_pb2.SpeakRequest(
        model=f.str("model", required=True), input=f.str("input", required=True), voice=f.str("voice"),
        encoding=ENCODINGS[fmt], language=f.str("language"), keep_alive=f.str("keep_alive"))
    speed = f.number("speed", 0.25, 4.0)
    if speed is not None:
        req.speed = speed
    return req, stream_format == "sse"


class SpeechRoutes:
    """Handlers for OpenAI's text to speech endpoint and the voice list."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/audio/speech", self.speech, methods=["POST"]),
            Route("/v1/audio/voices", self.voices, methods=["GET"]),
        ]

    async def speech(self, request: Request) -> Response:
        req, sse = speak_request(await read_json(request, self.gw.body_limit))
        messages = await primed(self.gw.api.speak(req))
        if sse:
            return ClosingStreamingResponse(_sse(messages), media_type="text/event-stream", headers=_SSE_HEADERS)
        first = await anext(messages, None)
        media = first.content_type if first is not None else "application/octet-stream"
        return ClosingStreamingResponse(_audio(first, messages), media_type=media,
                                        headers={"X-Accel-Buffering": "no"})

    async def voices(self, request: Request) -> Response:
        listed = await self.gw.api.list_voices(request.query_params.get("model", ""))
        data = [{"id": v.id, "name": v.id, "language": v.language, "gender": v.gender, "model": v.model,
                 "object": "voice"} for v in listed.voices]
        return JSONResponse({"object": "list", "data": data, "voices": [v.id for v in listed.voices]})


async def _audio(first: runtime_pb2.SpeakResponse | None,
                 messages: AsyncIterator[runtime_pb2.SpeakResponse]) -> AsyncIterator[bytes]:
    # Headers are sent: an error now can only end the body early (a client sees a short file).
    try:
        if first is not None and first.audio:
            yield first.audio
        async for m in messages:
            if m.audio:
                yield m.audio
    finally:
        await messages.aclose()  # a client that went away stops the synthesis


async def _sse(messages: AsyncIterator[runtime_pb2.SpeakResponse]) -> AsyncIterator[str]:
    """OpenAI's speech events: `speech.audio.delta` with base64 audio, then `speech.audio.done`
    (usage counts the input's characters: the models have no tokens)."""
    characters = 0
    try:
        async for m in messages:
            characters = m.characters
            if m.audio:
                yield "data: " + json.dumps({"type": "speech.audio.delta",
                                             "audio": base64.b64encode(m.audio).decode("ascii")}) + "\n\n"
    except OmgError as e:
        yield "data: " + stream_error_line(e, "openai") + "\n\n"
        return
    usage = {"input_tokens": characters, "output_tokens": 0, "total_tokens": characters}
    yield "data: " + json.dumps({"type": "speech.audio.done", "usage": usage}) + "\n\n"
