"""Admission: what a request must pass before a worker sees it, and how long a worker stays.

Validation of request fields the contract bounds, OpenAI's `whisper-1` alias, the bounded
per-model queue in front of each worker's slots (with its events), and keep_alive: a request's
value is checked, an idle worker's expiry set, and expired workers are reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import access, sampling
from ohmygpu.core.capabilities import chat_template, template_thinks
from ohmygpu.core.durations import parse_keep_alive
from ohmygpu.core.errors import InvalidArgument, PermissionDenied, ServerBusy
from ohmygpu.core.settings import Settings
from ohmygpu.core.store import ModelStore
from ohmygpu.daemon.events import EventBus
from ohmygpu.daemon.pool import WorkerKey
from ohmygpu.daemon.supervisor import Worker
from ohmygpu.events.v1 import events_pb2
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2


def check_sampling(params: run_spec_pb2.SamplingParams, settings: Settings) -> None:
    """Raise InvalidArgument for sampling parameters out of bounds: core/sampling.py's one
    table, the same the HTTP dialects parse against."""
    sampling.check(params, max_tokens_limit=settings.max_tokens_limit)


def check_chat(request: runtime_pb2.ChatRequest, settings: Settings) -> None:
    # Empty messages are refused at the daemon API's entrance (daemon/api/inference.py), the
    # one place both edges pass; Ollama's empty chat (a load) never becomes a ChatRequest.
    check_sampling(request.params, settings)
    sampling.check_logprobs(request.logprobs, request.top_logprobs)


def check_thinking(request: runtime_pb2.ChatRequest, record: assets_pb2.InstallRecord) -> None:
    """`think: true` for a model whose template cannot reason is refused before any queue, as
    Ollama refuses it (the worker checks the template it loaded too)."""
    if request.HasField("think") and request.think and not template_thinks(chat_template(record)):
        raise InvalidArgument(f"'think' was asked for, and '{record.name}' does not support thinking (its "
                              "chat template has no reasoning block)", param="think")


def check_embed(request: runtime_pb2.EmbedRequest) -> None:
    if not request.inputs:
        raise InvalidArgument("input must not be empty", param="input")
    if any(not text for text in request.inputs):
        raise InvalidArgument("input must not contain empty strings", param="input")


def check_transcribe(request: runtime_pb2.TranscribeRequest) -> None:
    if request.HasField("temperature") and not 0 <= request.temperature <= 1:
        raise InvalidArgument("temperature must be between 0 and 1", param="temperature")
    if request.beam_size > 20:
        raise InvalidArgument("beam_size must be at most 20", param="beam_size")


def check_image(request: runtime_pb2.GenerateImageRequest, settings: Settings) -> None:
    """The bounds of an image generation, before any queue or load: sizes a multiple of 8 within
    OMG_IMAGE_MAX_SIZE, steps, count and input image within their limits."""
    if not request.prompt.strip():
        raise InvalidArgument("'prompt' must not be empty", param="prompt")
    if len(request.prompt) + len(request.negative_prompt) > settings.max_text_chars:
        raise InvalidArgument(f"the prompt is longer than {settings.max_text_chars} characters", param="prompt")
    limit = settings.image_max_size
    for name in ("width", "height"):
        value = getattr(request, name)
        if value and (value % 8 or not 64 <= value <= limit):
            raise InvalidArgument(f"{name} must be a multiple of 8 from 64 to {limit} (OMG_IMAGE_MAX_SIZE), "
                                  f"not {value}", param="size")
    if request.steps > settings.image_max_steps:
        raise InvalidArgument(f"steps must be at most {settings.image_max_steps} (OMG_IMAGE_MAX_STEPS)",
                              param="steps")
    if request.count > settings.image_max_count:
        raise InvalidArgument(f"at most {settings.image_max_count} images per request (OMG_IMAGE_MAX_COUNT)",
                              param="n")
    if request.HasField("cfg_scale") and not 0 <= request.cfg_scale <= 30:
        raise InvalidArgument("cfg_scale must be between 0 and 30", param="cfg_scale")
    if request.HasField("strength") and not 0 <= request.strength <= 1:
        raise InvalidArgument("strength must be between 0 and 1", param="strength")
    if len(request.init_image) > settings.max_image_mb << 20:
        raise InvalidArgument(f"the input image is over {settings.max_image_mb} MiB (OMG_MAX_IMAGE_MB)",
                              param="image")
    if request.mask_image and not request.init_image:
        raise InvalidArgument("a mask (inpainting) needs the image it applies to", param="mask")
    if len(request.mask_image) > settings.max_image_mb << 20:
        raise InvalidArgument(f"the mask is over {settings.max_image_mb} MiB (OMG_MAX_IMAGE_MB)", param="mask")
    if request.mask_blur > 64:
        raise InvalidArgument("mask_blur must be from 0 to 64 pixels", param="mask_blur")


OPENAI_IMAGE_MODELS = ("dall-e", "gpt-image")  # what image clients send by default


def image_model(name: str, store: ModelStore) -> str:
    """The model an image generation uses: `name`; for an empty name or one of OpenAI's image
    model names (unless a model has that name), the store's first image model by name."""
    if name and not name.startswith(OPENAI_IMAGE_MODELS):
        return name
    records = store.list()
    if name and any(r.name == name for r in records):
        return name
    images = sorted(r.name for r in records if r.kind == assets_pb2.MODEL_KIND_IMAGE)
    if not images:
        raise InvalidArgument("no image model is installed: add one with `omg model add` or `omg pull`",
                              param="model")
    return images[0]


def whisper_model(name: str, settings: Settings, store: ModelStore) -> str:
    """The model a transcription uses: `name`; for an empty name or OpenAI's "whisper-1"
    (unless a model has that name), OMG_WHISPER_MODEL or else the store's first whisper model."""
    if name and name != "whisper-1":
        return name
    records = store.list()
    if name and any(r.name == name for r in records):
        return name
    if settings.default_whisper_model:
        return settings.default_whisper_model
    whispers = [r.name for r in records if r.kind == assets_pb2.MODEL_KIND_WHISPER]
    if not whispers:
        raise InvalidArgument("no whisper model is installed; pull one (`omg pull Systran/faster-whisper-base`) "
                              "or add a faster-whisper directory (`omg model add DIR`)", param="model")
    return whispers[0]


class Queues:
    """Each worker key's serving slots and the bounded queue of requests waiting for one."""

    def __init__(self, settings: Settings, events: EventBus) -> None:
        self.settings = settings
        self.events = events
        self._slots: dict[WorkerKey, asyncio.Semaphore] = {}
        self._waiting: dict[WorkerKey, int] = {}

    def queued(self, key: WorkerKey) -> int:
        """Requests waiting for a slot of the worker `key`."""
        return self._waiting.get(key, 0)

    def depths(self) -> dict[WorkerKey, int]:
        """Requests waiting for a slot, by worker key (keys that had a queue; 0 when empty now)."""
        return dict(self._waiting)

    def resize(self, key: WorkerKey) -> None:
        """Forget `key`'s slots unless requests wait on them: re-made at the next request's width."""
        if not self._waiting.get(key):
            self._slots.pop(key, None)

    @contextlib.asynccontextmanager
    async def slot(self, name: WorkerKey, width: int) -> AsyncIterator[None]:
        """A serving slot of model `name` (`width` at once), after waiting in its bounded queue.
        A client that goes away while waiting is cancelled here and leaves the queue at once."""
        waiting = self._waiting.get(name, 0)
        limit = self.settings.max_queue
        if waiting >= limit or sum(self._waiting.values()) >= limit:
            self.events.publish(events_pb2.EVENT_KIND_ALERT, f"queue full for {name}; request refused",
                                subject=f"model:{name}", level=events_pb2.LEVEL_WARNING)
            raise ServerBusy("server busy, please try again.  maximum pending requests exceeded")
        slots = self._slots.setdefault(name, asyncio.Semaphore(max(1, width)))
        queued = slots.locked()
        if queued:  # it will wait: the queue grows
            self.events.publish(events_pb2.EVENT_KIND_QUEUE, f"{name}: {waiting + 1} waiting",
                                subject=f"model:{name}", waiting=str(waiting + 1))
        self._waiting[name] = waiting + 1
        try:
            await slots.acquire()
        finally:
            self._waiting[name] -= 1
            if queued:  # it waited: the queue shrinks
                self.events.publish(events_pb2.EVENT_KIND_QUEUE, f"{name}: {self._waiting[name]} waiting",
                                    subject=f"model:{name}", waiting=str(self._waiting[name]))
        try:
            yield
        finally:
            slots.release()


class KeepAlive:
    """When an idle worker is unloaded: a request's keep_alive, else the daemon's default."""

    def __init__(self, settings: Settings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock  # wall clock; injected by tests
        self.default = parse_keep_alive(settings.keep_alive)

    def check(self, keep_alive: str) -> None:
        """A keep_alive of 0 unloads the model: the same rule as every unload (see
        Orchestrator.unload). A pinned model ignores keep_alive altogether (`set_expiry`)."""
        if keep_alive and parse_keep_alive(keep_alive) == 0 and not access.caller_manages(self.settings.admin_token):
            raise PermissionDenied("keep_alive 0 unloads the model, which manages the daemon and needs the "
                                   "admin token (OMG_ADMIN_TOKEN); leave keep_alive out or give a duration")

    def set_expiry(self, worker: Worker, keep_alive: str) -> None:
        if worker.pinned:
            worker.expires_at = None  # a run keeps its model until the run stops
            return
        seconds = parse_keep_alive(keep_alive) if keep_alive else self.default
        worker.expires_at = None if seconds is None else self.clock() + seconds

    async def reap(self, workers: Mapping[WorkerKey, Worker],
                   unload: Callable[[WorkerKey], Awaitable[object]]) -> list[str]:
        """Unload (by `unload`) idle, unpinned workers whose keep_alive has run out; returns
        their labels. A worker with requests in flight is never unloaded: its expiry is set
        again when its last request ends."""
        now = self.clock()
        expired = [key for key, w in workers.items()
                   if w.in_flight == 0 and not w.pinned and w.expires_at is not None and now >= w.expires_at]
        for key in expired:
            await unload(key)
        return [str(key) for key in expired]
