"""`omg mcp`: the daemon's models as MCP tools over stdio (the official `mcp` SDK), for MCP
clients such as Claude Desktop. A gRPC client of the daemon and nothing more; it starts when the
daemon is down and says so in each answer. Every failure comes back as an MCP tool error with
the daemon's message, never as a crash of the server."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from mcp.server.mcpserver import Audio, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from ohmygpu.api.v1 import audio_pb2, images_pb2_grpc, jobs_pb2, models_pb2, system_pb2
from ohmygpu.cli.client import Client, CliError
from ohmygpu.core import wav
from ohmygpu.core.enums import enum_name
from ohmygpu.core.image_size import parse_size
from ohmygpu.core.kinds import kind_name
from ohmygpu.core.settings import Settings
from ohmygpu.core.transcripts import Transcript
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from pydantic import Field

T = TypeVar("T")
_ROLES = ("system", "user", "assistant")


def build_server(settings: Settings) -> MCPServer:
    """The MCP server with its tools (not started)."""
    server = MCPServer("ohmygpu", instructions=(
        "Local AI models served by the ohmygpu daemon (omg): chat with a local LLM, list and pull "
        "models, transcribe audio files, generate images, speak text. Use list_models to see what is installed."))

    async def daemon(work: Callable[[Client], T]) -> T:
        """Run blocking gRPC work in a thread; daemon errors become tool errors."""
        def call() -> T:
            client = Client(settings)
            try:
                return work(client)
            finally:
                client.close()
        try:
            return await anyio.to_thread.run_sync(call)
        except CliError as e:
            raise ToolError(e.message) from None

    @server.tool(description="List the models installed in the local ohmygpu store: name, kind "
                             "(llm, embedding, whisper, image), size and quantization.")
    async def list_models() -> list[dict[str, Any]]:
        resp = await daemon(lambda c: c.call(c.models.ListModels, models_pb2.ListModelsRequest()))
        return [{"name": m.name, "kind": kind_name(m.kind), "size_bytes": m.size_bytes,
                 "quantization": m.gguf.quantization or None} for m in resp.models]

    @server.tool(description="The ohmygpu daemon's state: version, address, loaded models with their "
                             "device and memory. Says so when the daemon is not running.")
    async def status() -> dict[str, Any]:
        def work(c: Client) -> dict[str, Any]:
            v = c.call(c.system.GetVersion, system_pb2.GetVersionRequest(), timeout=5)
            loaded = c.call(c.system.ListLoaded, system_pb2.ListLoadedRequest(), timeout=5)
            return {"running": True, "version": v.version, "address": settings.grpc_addr,
                    "loaded": [{"name": m.name, "mode": enum_name(run_spec_pb2.Mode, m.mode),
                                "device": m.device, "memory_bytes": m.memory_bytes, "in_flight": m.in_flight}
                               for m in loaded.models]}
        try:
            return await daemon(work)
        except ToolError as e:  # a down daemon is an answer here, not a failure
            return {"running": False, "address": settings.grpc_addr, "message": str(e)}

    @server.tool(description="Chat with a local model. Give either `prompt` (one user message) or "
                             "`messages` (the conversation so far); returns the model's answer.")
    async def chat(
        model: Annotated[str, Field(description="model name, as list_models shows it")],
        prompt: Annotated[str | None, Field(description="a single user message")] = None,
        messages: Annotated[list[dict[str, str]] | None, Field(
            description="conversation: objects with role (system, user, assistant) and content")] = None,
        system: Annotated[str | None, Field(description="a system prompt to put first")] = None,
        temperature: Annotated[float | None, Field(ge=0, le=2, description="sampling temperature")] = None,
        max_tokens: Annotated[int | None, Field(ge=1, le=32768, description="most tokens to generate")] = None,
    ) -> str:
        if (prompt is None) == (messages is None):
            raise ToolError("give exactly one of prompt or messages")
        conversation = [runtime_pb2.ChatMessage(role="system", content=system)] if system else []
        for i, m in enumerate(messages or [{"role": "user", "content": prompt or ""}]):
            if m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise ToolError(f"messages[{i}] needs role (system, user or assistant) and content")
            conversation.append(runtime_pb2.ChatMessage(role=m["role"], content=m["content"]))
        params = run_spec_pb2.SamplingParams()
        if temperature is not None:
            params.temperature = temperature
        if max_tokens is not None:
            params.max_tokens = max_tokens
        request = runtime_pb2.ChatRequest(model=model, messages=conversation, params=params)

        def work(c: Client) -> str:
            return "".join(m.content for m in c.iterate(c.stream(c.chat.Chat, request)))
        return await daemon(work)

    @server.tool(description="Download a model from the Hugging Face hub into the local store "
                             "(org/repo, org/repo@revision or hf.co/org/repo:QUANT) and wait for it.")
    async def pull_model(
        source: Annotated[str, Field(description="what to pull, e.g. hf.co/org/repo-GGUF:Q4_K_M")],
        name: Annotated[str | None, Field(description="name to register it under")] = None,
        wait_seconds: Annotated[int, Field(ge=0, le=3600, description="how long to wait for the pull")] = 600,
    ) -> dict[str, Any]:
        def work(c: Client) -> dict[str, Any]:
            job = c.call(c.models.InstallModel, models_pb2.InstallModelRequest(source=source, name=name or ""))
            deadline = time.monotonic() + wait_seconds
            while job.state in (jobs_pb2.JOB_STATE_QUEUED, jobs_pb2.JOB_STATE_RUNNING) and time.monotonic() < deadline:
                time.sleep(0.5)
                job = c.call(c.jobs.GetJob, jobs_pb2.GetJobRequest(id=job.id))
            state = enum_name(jobs_pb2.JobState, job.state)
            if job.state == jobs_pb2.JOB_STATE_FAILED:
                raise CliError(f"pull of {source} failed: {job.error}")
            return {"job": job.id, "state": state, "model": job.model, "total_bytes": job.total_bytes,
                    "completed_bytes": job.completed_bytes, "message": job.message}
        return await daemon(work)

    @server.tool(description="Transcribe an audio file on this machine (wav, mp3, flac, ogg, m4a, webm) "
                             "with a local whisper model; returns the text, or subtitles with format srt/vtt.")
    async def transcribe(
        path: Annotated[str, Field(description="absolute path of the audio file")],
        model: Annotated[str | None, Field(description="whisper model; default: the installed one")] = None,
        language: Annotated[str | None, Field(description="language code; detected when not given")] = None,
        format: Annotated[str, Field(pattern="^(text|srt|vtt|json|verbose_json)$")] = "text",
    ) -> str:
        audio = await anyio.to_thread.run_sync(read_audio_file, path, settings.max_audio_mb << 20)
        request = audio_pb2.TranscribeRequest(model=model or "", audio=audio, language=language or "")

        def work(c: Client) -> str:
            transcript = Transcript()
            for message in c.iterate(c.stream(c.audio.Transcribe, request)):
                transcript.add(message)
            return transcript.render(format)
        return await daemon(work)

    @server.tool(description="Generate an image with a local image model (see list_models, kind image); "
                             "returns the PNG.")
    async def generate_image(
        prompt: Annotated[str, Field(description="what to draw", min_length=1)],
        model: Annotated[str, Field(description="an image model from list_models")],
        size: Annotated[str, Field(pattern=r"^\d{2,4}x\d{2,4}$", description="WIDTHxHEIGHT")] = "512x512",
        steps: Annotated[int | None, Field(ge=1, le=150, description="denoising steps")] = None,
        seed: Annotated[int | None, Field(ge=0, description="seed; random when not given")] = None,
        negative_prompt: Annotated[str | None, Field(description="what to keep out")] = None,
    ) -> Image:
        width, height = parse_size(size)
        request = runtime_pb2.GenerateImageRequest(model=model, prompt=prompt, width=width, height=height,
                                                   steps=steps or 0, negative_prompt=negative_prompt or "")
        if seed is not None:
            request.seed = seed

        def work(c: Client) -> bytes:
            stub = images_pb2_grpc.ImageServiceStub(c.channel)
            for message in c.iterate(c.stream(stub.GenerateImage, request)):
                if message.HasField("image"):
                    return message.image.png
            raise CliError("the daemon returned no image")
        return Image(data=await daemon(work), format="png")

    @server.tool(description="Speak text aloud with a local text to speech voice (Piper or Kokoro; see "
                             "list_models, kind tts); returns the audio.")
    async def speak(
        text: Annotated[str, Field(description="what to say", min_length=1)],
        model: Annotated[str | None, Field(description="a speech model; default: the installed one")] = None,
        voice: Annotated[str | None, Field(description="a voice of the model; default: its first")] = None,
        format: Annotated[str, Field(pattern="^(wav|mp3)$", description="audio format")] = "wav",
        speed: Annotated[float | None, Field(ge=0.25, le=4.0, description="speaking rate")] = None,
    ) -> Audio:
        request = runtime_pb2.SpeakRequest(
            model=model or "", input=text, voice=voice or "",
            encoding=runtime_pb2.AUDIO_ENCODING_WAV if format == "wav" else runtime_pb2.AUDIO_ENCODING_MP3)
        if speed is not None:
            request.speed = speed

        def work(c: Client) -> bytes:
            data = b"".join(m.audio for m in c.iterate(c.stream(c.audio.Speak, request)))
            return wav.with_sizes(data) if format == "wav" else data  # a whole file, not a stream
        return Audio(data=await daemon(work), format="wav" if format == "wav" else "mpeg")

    # OMG_MCP_TOOLS (or --tools) limits what an MCP client may do, e.g. chat only, no pulls.
    offered = {t.strip() for t in settings.mcp_tools.split(",") if t.strip()}
    unknown = offered - set(TOOLS)
    if unknown:
        raise CliError(f"unknown MCP tools in OMG_MCP_TOOLS: {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(TOOLS)}")
    for name in TOOLS:
        if name not in offered:
            server.remove_tool(name)
    return server


TOOLS = ("chat", "list_models", "status", "pull_model", "transcribe", "generate_image", "speak")


def read_audio_file(path: str, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them; raises ToolError.

    An MCP client names any path: a FIFO must not hang the server (opened non-blocking, and
    only a regular file is read), /dev/zero or a huge file must not fill its memory (the size is
    checked on the open descriptor, then the read is bounded). Messages do not echo the path."""
    file = Path(path).expanduser()
    if not file.is_absolute():
        raise ToolError("give the absolute path of an audio file")
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise ToolError(f"cannot read the audio file: {e.strerror}") from None
    try:
        info = os.fstat(fd)  # of what was opened, not of what the path names a moment later
        if not stat.S_ISREG(info.st_mode):
            raise ToolError("cannot read the audio file: it is not a regular file (a directory, device or pipe)")
        too_big = ToolError(f"the audio file is over the {limit >> 20} MiB limit (OMG_MAX_AUDIO_MB)")
        if info.st_size > limit:
            raise too_big
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read
                raise too_big
        return b"".join(chunks)
    except OSError as e:
        raise ToolError(f"cannot read the audio file: {e.strerror}") from None
    finally:
        os.close(fd)


def run_mcp(settings: Settings) -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    build_server(settings).run("stdio")
    return 0
