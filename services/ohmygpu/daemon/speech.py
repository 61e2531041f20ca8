"""Text to speech on the daemon's side: what a speech request must pass before a worker sees
it, which model OpenAI's names mean, and the voices the store's speech models offer.

Voices come from each record's SpeechInfo (core/speech_files.py read them when the model was
added), so listing them and refusing an unknown voice need no worker: a 400 comes at once, not
after a model load.
"""

from __future__ import annotations

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.settings import Settings
from ohmygpu.core.speech_files import voices_of
from ohmygpu.core.store import ModelStore
from ohmygpu.runtime.v1 import runtime_pb2

# What OpenAI's clients send: its model names, and its voice names (which a local model does
# not have; they mean the model's first voice, as `tts-1` means the default model, so a client
# with a hard-coded "alloy" still speaks).
OPENAI_TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                           "shimmer", "verse", "marin", "cedar"})
MIN_SPEED, MAX_SPEED = 0.25, 4.0


def tts_model(name: str, settings: Settings, store: ModelStore) -> str:
    """The model a speech request uses: `name`; for an empty name or one of OpenAI's (unless a
    model has that name), OMG_TTS_MODEL or else the store's first text to speech model by name.
    Raises InvalidArgument when none is installed."""
    if name and name not in OPENAI_TTS_MODELS:
        return name
    records = store.list()
    if name and any(r.name == name for r in records):
        return name
    if settings.default_tts_model:
        return settings.default_tts_model
    voices = sorted(r.name for r in records if r.kind == assets_pb2.MODEL_KIND_TTS)
    if not voices:
        raise InvalidArgument("no text to speech model is installed: add a Piper voice (`omg model add "
                              "VOICE.onnx`, its .onnx.json beside it) or a Kokoro folder", param="model")
    return voices[0]


def check_speak(request: runtime_pb2.SpeakRequest, record: assets_pb2.InstallRecord, settings: Settings) -> None:
    """Refuse, before any queue or load, what no worker should see: empty or over-long input
    (OMG_MAX_SPEECH_CHARS), a speed out of 0.25..4, a voice the model does not have (OpenAI's
    voice names become the model's first voice: `request.voice` is cleared). Raises InvalidArgument."""
    if not request.input.strip():
        raise InvalidArgument("'input' must not be empty", param="input")
    if len(request.input) > settings.max_speech_chars:
        raise InvalidArgument(f"'input' is {len(request.input)} characters, over the limit of "
                              f"{settings.max_speech_chars} (OMG_MAX_SPEECH_CHARS)", param="input")
    if request.HasField("speed") and not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise InvalidArgument(f"'speed' must be between {MIN_SPEED:g} and {MAX_SPEED:g}", param="speed")
    if len(request.language) > 16:
        raise InvalidArgument("'language' must be a language code such as en-us", param="language")
    known = list(record.speech.voices)
    if request.voice and request.voice not in known:
        if request.voice.lower() in OPENAI_VOICES:
            request.voice = ""
            return
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise InvalidArgument(f"voice '{request.voice[:64]}' is not a voice of model '{record.name}'; its "
                              f"voices: {shown} (GET /v1/audio/voices lists them)", param="voice")


def list_voices(store: ModelStore, model: str = "") -> runtime_pb2.ListVoicesResponse:
    """The voices of every text to speech model in the store, or of `model` (raises
    ModelNotFound, or InvalidArgument for a model that is not a speech model)."""
    if model:
        record = store.get(model)
        if record.kind != assets_pb2.MODEL_KIND_TTS:
            raise InvalidArgument(f"model '{model}' is not a text to speech model", param="model")
        records = [record]
    else:
        records = sorted((r for r in store.list() if r.kind == assets_pb2.MODEL_KIND_TTS), key=lambda r: r.name)
    return runtime_pb2.ListVoicesResponse(voices=[v for r in records for v in voices_of(r)])
