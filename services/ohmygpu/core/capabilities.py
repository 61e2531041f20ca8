"""What a model can be asked to do, told from its record: one answer for every API that says it.

Ollama's /api/show `capabilities` is what clients read to decide how to offer a model: Open
WebUI and llm-ollama register a model for chat only when it has `completion`, and llm-ollama
passes tools only when it has `tools`. So the list follows what the runtime that serves the
model can do, with Ollama's names and rules:

- a GGUF LLM (llama.cpp): `completion`, and `tools` when its chat template renders a `tools`
  list (Ollama decides from the template's variables; for other templates the llama.cpp
  worker still accepts tools, described in a system message, but does not advertise it);
- a GGUF embedding model: `embedding`;
- anything else (a whisper model, weights no runtime of this version serves): nothing, as
  Ollama has no speech capability. Such models are served by other routes
  (/v1/audio/transcriptions) and /api/tags does not list them.

Not advertised: `insert` (the worker does not implement fill-in-the-middle `suffix`), `vision`
(no projector support), `thinking`.
"""

from __future__ import annotations

from ohmygpu.assets.v1 import assets_pb2

COMPLETION, TOOLS, EMBEDDING = "completion", "tools", "embedding"
# Kinds the llama.cpp runtime generates text for (records from before kinds were recorded
# have none and are chat models).
_GENERATIVE = (assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_UNSPECIFIED)


def template_handles_tools(template: str) -> bool:
    """Whether a Jinja chat template renders the request's tools (refers to `tools`)."""
    return "tools" in template


def capabilities(record: assets_pb2.InstallRecord) -> list[str]:
    """Ollama's capability names for `record` (see the module's docstring), in Ollama's order."""
    if record.format != assets_pb2.ARTIFACT_FORMAT_GGUF:
        return []
    if record.kind == assets_pb2.MODEL_KIND_EMBEDDING:
        return [EMBEDDING]
    if record.kind in _GENERATIVE:
        template = record.derived.template or record.gguf.chat_template  # a derived model's renders
        return [COMPLETION] + ([TOOLS] if template_handles_tools(template) else [])
    return []
