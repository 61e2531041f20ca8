"""The faster-whisper worker: one process, one CTranslate2 whisper model, serving the Runtime
contract's Transcribe.

Started by the daemon as `python -m ohmygpu.runtimes.whisper.worker --socket PATH`. Decoding
runs on one dedicated thread (CTranslate2 keeps its own intra-op pool sized by cpu_threads);
segments cross to the event loop through an asyncio queue as faster-whisper yields them, so the
client sees the first segment while later windows are still being decoded, Health answers
throughout, and a cancelled stream stops decoding at the next segment.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker

log = logging.getLogger("ohmygpu.worker.whisper")
_DONE = object()
_DEFAULT_BEAM = 5
# The daemon refuses audio over OMG_MAX_AUDIO_SECONDS by its header before it gets here; this is
# the worker's own bound, for streams no header gives a length to (found out only by decoding).
# Workers get no OMG_* settings, so it is fixed, above any sensible setting: 4 h is ~1.4 GB.
MAX_DECODE_SECONDS = 4 * 3600


def compute_type_for(device: str, requested: str) -> str:
    """CTranslate2 compute type: as asked, else int8 on CPU and float16 on a GPU."""
    if requested and requested != "auto":
        return requested
    return "float16" if device.startswith("cuda") else "int8"


class WhisperRuntime(BaseRuntime):
    """Runtime servicer over one faster_whisper.WhisperModel."""

    runtime_name = "whisper"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.model: Any = None
        self.device = "cpu"
        self.compute_type = ""
        self.lock = asyncio.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    async def GetCapabilities(self, request, context):
        import ctranslate2
        import faster_whisper

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="whisper", version=f"faster-whisper {faster_whisper.__version__}",
            modes=[run_spec_pb2.MODE_TRANSCRIPTION], formats=[assets_pb2.ARTIFACT_FORMAT_CT2],
            gpu=ctranslate2.get_cuda_device_count() > 0,
        )

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        record = request.model
        bins = [a.local_path for a in record.artifacts if a.format == assets_pb2.ARTIFACT_FORMAT_CT2]
        if not bins:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no CTranslate2 model.bin to load")
        res = request.spec.resources
        self.threads = res.cpu_threads or (os.cpu_count() or 1)
        self.device = res.device or "cpu"
        ext = request.spec.extensions
        requested = ext["compute_type"].string_value if "compute_type" in ext else ""
        self.compute_type = compute_type_for(self.device, requested)
        self.state = runtime_pb2.WORKER_STATE_LOADING
        yield runtime_pb2.LoadResponse(progress=0.0, stage="reading weights")
        started = time.perf_counter()
        try:
            self.model = await self._on_thread(self._load, str(Path(bins[0]).parent))
        except (ValueError, RuntimeError, OSError) as e:
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %s", e)  # the log may name the path; the answer must not
            await context.abort(grpc.StatusCode.INTERNAL, "the model is not loadable: faster-whisper could "
                                "not load it (its model.bin or config is damaged, replaced or unsupported)")
        self.model_name = record.name
        self.state = runtime_pb2.WORKER_STATE_READY
        log.info("loaded %s in %.2fs (device=%s, compute_type=%s, threads=%d)", record.name,
                 time.perf_counter() - started, self.device, self.compute_type, self.threads)
        yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())

    def _load(self, directory: str) -> Any:
        from faster_whisper import WhisperModel

        device, _, index = self.device.partition(":")
        return WhisperModel(directory, device=device, device_index=int(index or 0),
                            compute_type=self.compute_type, cpu_threads=self.threads)

    async def _on_thread(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def Unload(self, request, context):
        async with self.lock:
            self.model = None
            self.model_name = ""
            self.state = runtime_pb2.WORKER_STATE_IDLE
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        return self.status()

    async def Transcribe(self, request: runtime_pb2.TranscribeRequest, context,
                         ) -> AsyncIterator[runtime_pb2.TranscribeResponse]:
        if self.model is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model loaded")
        if not request.audio and not request.audio_path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no audio given")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self.lock:
            self.in_flight += 1
            fut = loop.run_in_executor(self.executor, self._transcribe, request, emit, cancelled)
            fut.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
            try:
                while (item := await queue.get()) is not _DONE:
                    yield item
                error = fut.exception()
                if isinstance(error, BadAudio):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
                if error is not None:
                    log.error("transcription failed: %r", error)  # the log may name the file; the answer not
                    await context.abort(grpc.StatusCode.INTERNAL, "transcription failed inside faster-whisper "
                                        "(the worker log has the details)")
            finally:
                cancelled.set()
                self.in_flight -= 1
                if not fut.done():
                    await asyncio.wait([fut])

    def _transcribe(self, request: runtime_pb2.TranscribeRequest, emit: Any,
                    cancelled: threading.Event) -> None:
        import io

        source: Any = request.audio_path or io.BytesIO(request.audio)
        audio = decode_bounded(source, self.model.feature_extractor.sampling_rate, max_seconds=MAX_DECODE_SECONDS)
        if audio.size == 0:
            raise BadAudio("the audio is empty (0 seconds of sound)")
        temperature: Any = request.temperature if request.HasField("temperature") else \
            [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        segments, info = self.model.transcribe(
            audio, language=request.language or None,
            task="translate" if request.translate else "transcribe",
            beam_size=request.beam_size or _DEFAULT_BEAM, temperature=temperature,
            initial_prompt=request.initial_prompt or None, word_timestamps=request.word_timestamps,
            vad_filter=request.vad_filter)
        emit(runtime_pb2.TranscribeResponse(info=runtime_pb2.TranscriptionInfo(
            language=info.language, language_probability=info.language_probability,
            duration=info.duration, duration_after_vad=info.duration_after_vad)))
        for seg in segments:  # a generator: each window is decoded when asked for
            out = runtime_pb2.Segment(
                id=seg.id - 1, start=seg.start, end=seg.end, text=seg.text, avg_logprob=seg.avg_logprob,
                compression_ratio=seg.compression_ratio, no_speech_prob=seg.no_speech_prob,
                temperature=seg.temperature or 0.0, tokens=seg.tokens, seek=seg.seek)
            for w in seg.words or []:
                out.words.add(word=w.word, start=w.start, end=w.end, probability=w.probability)
            emit(runtime_pb2.TranscribeResponse(segment=out))
            if cancelled.is_set():
                return


class BadAudio(ValueError):
    """The upload is not decodable audio, or is too long (a client error, not a worker failure)."""


def decode_bounded(source: Any, sampling_rate: int, *, max_seconds: float) -> Any:
    """The first audio stream of `source` as mono float32 at `sampling_rate`, as faster-whisper's
    decode_audio gives it, but refused (BadAudio) once it lasts over `max_seconds`: by its header
    before anything is decoded, else as soon as the decoded input passes the bound. Frames are
    resampled one at a time, so a low-rate header (100 Hz, resampled 160x) never makes one
    huge buffer. Messages name no path."""
    import av
    import numpy as np

    from ohmygpu.core.audio import too_long

    chunks: list[Any] = []
    try:
        with av.open(source, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise BadAudio("the file holds no audio stream")
            stream = container.streams.audio[0]
            stated = container.duration / av.time_base if container.duration else 0.0
            if stated > max_seconds:
                raise BadAudio(too_long(stated, max_seconds))
            resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
            decoded = 0.0
            frames = container.decode(stream)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.InvalidDataError:
                    continue  # as decode_audio does: skip a damaged frame
                decoded += frame.samples / (frame.sample_rate or sampling_rate)
                if decoded > max_seconds:
                    raise BadAudio(too_long(decoded, max_seconds))
                frame.pts = None
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except BadAudio:
        raise
    except Exception as e:  # noqa: BLE001 - PyAV raises many types for undecodable input
        reason = getattr(e, "strerror", None) or "damaged, or a format FFmpeg does not read"
        raise BadAudio(f"the audio cannot be decoded ({reason})") from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def main() -> None:
    run_worker(WhisperRuntime)


if __name__ == "__main__":
    main()
