"""The text to speech worker: one process, one Piper voice or Kokoro model run by onnxruntime,
serving the Runtime contract's Speak and ListVoices.

Started by the daemon as `python -m ohmygpu.runtimes.tts.worker --socket PATH`. Synthesis runs on
one dedicated thread, sentence by sentence: each sentence is phonemized (espeak-ng, a child
process), synthesized, encoded, and its bytes cross to the event loop through an asyncio queue,
so the client hears the first sentence while the next is being made; a cancelled stream stops
at the next sentence. Health answers throughout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.speech_files import voices_of
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker
from ohmygpu.runtimes.tts.encode import FORMATS, Encoder
from ohmygpu.runtimes.tts.engine import Engine, open_engine
from ohmygpu.runtimes.tts.phonemes import Unphonemizable, sentences

log = logging.getLogger("ohmygpu.worker.tts")
_DONE = object()
# The daemon bounds input by OMG_MAX_SPEECH_CHARS; workers get no OMG_* settings, so this is the
# worker's own fixed bound, above any sensible setting (about 3 hours of speech).
MAX_INPUT_CHARS = 200_000
SENTENCE_PAUSE_S = 0.2  # silence between sentences: what a reader leaves
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's bounds


class BadSpeechRequest(ValueError):
    """A client error found by the worker (text it cannot phonemize, unknown voice)."""


class TtsRuntime(BaseRuntime):
    """Runtime servicer over one speech Engine."""

    runtime_name = "tts"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.engine: Engine | None = None
        self.record = assets_pb2.InstallRecord()
        self.lock = asyncio.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts")

    async def GetCapabilities(self, request, context):
        import onnxruntime

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="tts", version=f"onnxruntime {onnxruntime.__version__}",
            modes=[run_spec_pb2.MODE_SPEECH], formats=[assets_pb2.ARTIFACT_FORMAT_ONNX], gpu=False)

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        record = request.model
        self.threads = request.spec.resources.cpu_threads or 1
        self.state = runtime_pb2.WORKER_STATE_LOADING
        yield runtime_pb2.LoadResponse(progress=0.0, stage="reading weights")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            self.engine = await loop.run_in_executor(self.executor, open_engine, record, self.threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %r", e)  # the log may name the path; the answer must not
            await context.abort(grpc.StatusCode.INTERNAL, "the model is not loadable: onnxruntime could not "
                                f"open this {record.speech.engine or 'speech'} model (damaged, replaced or "
                                "unsupported; the worker log has the details)")
        self.record = record
        self.model_name = record.name
        self.state = runtime_pb2.WORKER_STATE_READY
        log.info("loaded %s (%s, %d voices) in %.2fs, threads=%d", record.name, self.engine.engine,
                 len(self.engine.voices), time.perf_counter() - started, self.threads)
        yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())

    async def Unload(self, request, context):
        async with self.lock:
            self.engine = None
            self.model_name = ""
            self.state = runtime_pb2.WORKER_STATE_IDLE
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        return self.status()

    async def ListVoices(self, request, context) -> runtime_pb2.ListVoicesResponse:
        if self.engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model loaded")
        return runtime_pb2.ListVoicesResponse(voices=voices_of(self.record))

    def _check(self, request: runtime_pb2.SpeakRequest) -> tuple[str, float]:
        """The voice and speed a request speaks with; raises BadSpeechRequest."""
        assert self.engine is not None
        if not request.input.strip():
            raise BadSpeechRequest("the input text is empty")
        if len(request.input) > MAX_INPUT_CHARS:
            raise BadSpeechRequest(f"the input is {len(request.input)} characters, over this worker's "
                                   f"{MAX_INPUT_CHARS}")
        voice = request.voice or self.engine.voices[0]
        if voice not in self.engine.voices:
            raise BadSpeechRequest(f"voice '{voice[:64]}' is not one of this model's: "
                                   f"{', '.join(self.engine.voices[:20])}")
        speed = request.speed if request.HasField("speed") else 1.0
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise BadSpeechRequest(f"speed must be between {MIN_SPEED:g} and {MAX_SPEED:g}")
        if request.encoding not in FORMATS:
            raise BadSpeechRequest(f"unknown audio encoding {request.encoding}")
        return voice, speed

    async def Speak(self, request: runtime_pb2.SpeakRequest, context) -> AsyncIterator[runtime_pb2.SpeakResponse]:
        if self.engine is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model loaded")
        try:
            voice, speed = self._check(request)
        except BadSpeechRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: runtime_pb2.SpeakResponse) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self.lock:
            self.in_flight += 1
            fut = loop.run_in_executor(self.executor, self._speak, request, voice, speed, emit, cancelled)
            fut.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
            try:
                while (item := await queue.get()) is not _DONE:
                    yield item
                error = fut.exception()
                if isinstance(error, (Unphonemizable, BadSpeechRequest)):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                if error is not None:
                    log.error("synthesis failed: %r", error)
                    await context.abort(grpc.StatusCode.INTERNAL, f"synthesis failed inside the "
                                        f"{self.engine.engine if self.engine else 'speech'} engine "
                                        "(the worker log has the details)")
            finally:
                cancelled.set()
                self.in_flight -= 1
                if not fut.done():
                    await asyncio.wait([fut])

    def _speak(self, request: runtime_pb2.SpeakRequest, voice: str, speed: float,
               emit: Callable[[runtime_pb2.SpeakResponse], None], cancelled: threading.Event) -> None:
        engine = self.engine
        assert engine is not None
        text = sentences(request.input)
        if not text:
            raise BadSpeechRequest("the input has nothing to speak")
        encoder = Encoder(request.encoding, engine.sample_rate)
        rate = encoder.format.rate or engine.sample_rate
        pause = np.zeros(int(SENTENCE_PAUSE_S * engine.sample_rate), np.float32)
        seconds, characters = 0.0, 0
        try:
            for i, sentence in enumerate(text):
                # Phonemized one at a time: the first sentence's error (kanji, an unknown
                # language) comes before any audio, so the client gets a plain 400.
                ipa = engine.phonemize(sentence, voice, request.language)
                samples = engine.synthesize(ipa, voice, speed) if ipa else np.zeros(0, np.float32)
                if i:
                    samples = np.concatenate([pause, samples])
                seconds += samples.size / engine.sample_rate
                characters += len(sentence)
                emit(runtime_pb2.SpeakResponse(audio=encoder.encode(samples), sample_rate=rate,
                                               content_type=encoder.format.content_type, seconds=seconds,
                                               characters=characters))
                if cancelled.is_set():
                    return
            emit(runtime_pb2.SpeakResponse(audio=encoder.finish(), sample_rate=rate,
                                           content_type=encoder.format.content_type, seconds=seconds,
                                           characters=len(request.input), done=True))
        finally:
            encoder.close()


def main() -> None:
    run_worker(TtsRuntime)


if __name__ == "__main__":
    main()
