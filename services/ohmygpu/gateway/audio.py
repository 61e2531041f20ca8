"""OpenAI's audio API: /v1/audio/transcriptions and /v1/audio/translations, multipart in,
json / text / srt / vtt / verbose_json out, or SSE `transcript.text.delta` events with stream=true."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from ohmygpu.core.errors import InvalidArgument, OmgError
from ohmygpu.core.transcripts import FORMATS, Transcript, media_type
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.errors import stream_error_line
from ohmygpu.gateway.multipart import copy_upload, form_file, multipart_form
from ohmygpu.gateway.streaming import ClosingStreamingResponse, primed
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_TRUE = {"true", "1", "yes", "on"}


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"'{key}' must be a text field", param=key)
    return value.strip()


def _number(form: FormData, key: str, lo: float, hi: float) -> float | None:
    raw = _text(form, key)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidArgument(f"'{key}' must be a number", param=key) from None
    if not lo <= value <= hi:
        raise InvalidArgument(f"'{key}' must be between {lo:g} and {hi:g}", param=key)
    return value


class AudioRoutes:
    """Handlers for OpenAI's speech-to-text endpoints."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", self.translations, methods=["POST"]),
        ]

    async def transcriptions(self, request: Request) -> Response:
        return await self._handle(request, translate=False)

    async def translations(self, request: Request) -> Response:
        return await self._handle(request, translate=True)

    def _request(self, form: FormData, translate: bool) -> tuple[runtime_pb2.TranscribeRequest, str, set[str], bool]:
        fmt = _text(form, "response_format") or "json"
        if fmt not in FORMATS:
            raise InvalidArgument(f"'response_format' must be one of {', '.join(FORMATS)}", param="response_format")
        granularities = {v.strip() for k in ("timestamp_granularities[]", "timestamp_granularities")
                         for v in form.getlist(k) if isinstance(v, str)}
        if granularities - {"word", "segment"}:
            raise InvalidArgument("'timestamp_granularities' takes word and/or segment",
                                  param="timestamp_granularities")
        stream = _text(form, "stream").lower() in _TRUE
        if stream and translate:
            raise InvalidArgument("translations do not stream", param="stream")
        req = runtime_pb2.TranscribeRequest(
            model=_text(form, "model"), language="" if translate else _text(form, "language"),
            initial_prompt=_text(form, "prompt"), translate=translate,
            word_timestamps="word" in granularities,
            vad_filter=_text(form, "vad_filter").lower() in _TRUE)
        temperature = _number(form, "temperature", 0, 1)
        if temperature is not None:
            req.temperature = temperature
        beam = _number(form, "beam_size", 1, 20)  # not OpenAI's; faster-whisper's beam width
        if beam is not None:
            req.beam_size = int(beam)
        if not req.model:
            raise InvalidArgument("'model' is required (whisper-1 picks the default whisper model)", param="model")
        if len(req.language) > 16:
            raise InvalidArgument("'language' must be a language code such as en", param="language")
        return req, fmt, granularities, stream

    async def _handle(self, request: Request, *, translate: bool) -> Response:
        limit = self.gw.settings.max_audio_mb << 20
        async with multipart_form(request, limit) as form:
            req, fmt, granularities, stream = self._request(form, translate)
            upload = form_file(form, "file")
            with self.gw.api.upload() as (path, out):
                if await copy_upload(upload, out) == 0:
                    raise InvalidArgument("the audio file is empty", param="file")
                await upload.close()
                messages = await primed(self.gw.api.transcribe(req, path))
                # The first message (the audio's info) comes after the worker decoded the whole
                # file into memory, so the upload may go when this block ends, stream or not.
                if stream:
                    return ClosingStreamingResponse(self._sse(messages), media_type="text/event-stream",
                                                    headers=_SSE_HEADERS)
                transcript = Transcript(task="translate" if translate else "transcribe")
                async for m in messages:
                    transcript.add(m)
        words = "word" in granularities
        body = transcript.render(fmt, words=words, segments=not granularities or "segment" in granularities)
        return Response(body, media_type=media_type(fmt))

    async def _sse(self, messages: AsyncIterator[runtime_pb2.TranscribeResponse]) -> AsyncIterator[str]:
        transcript = Transcript()
        try:
            async for m in messages:
                segment = transcript.add(m)
                if segment is not None and segment.text:
                    yield "data: " + json.dumps({"type": "transcript.text.delta", "delta": segment.text}) + "\n\n"
        except OmgError as e:
            yield "data: " + stream_error_line(e, "openai") + "\n\n"
            return
        done = {"type": "transcript.text.done", "text": transcript.text, "usage": transcript.usage()}
        yield "data: " + json.dumps(done) + "\n\n"
