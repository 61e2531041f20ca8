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

- `thinking` when the chat template has a reasoning block (`<think>`, as Qwen3, DeepSeek-R1 and
  their distillations have, or Qwen3's `enable_thinking` switch): the llama.cpp worker then
  reports the reasoning apart from the answer, and `think: true` is refused for other models.

A Hugging Face format model (the transformers runtime) is `completion` (an LLM or an adapter),
`embedding`, or nothing (a reranker, served by /v1/rerank). That runtime has no grammar and no
tool-call parser: `refusal` names what a request asks that it would have to ignore (tools, a
response format, log probabilities, thinking), and the daemon refuses such a request with a 400
naming the feature instead of answering as if it had been honoured.

Not advertised: `insert` (the worker does not implement fill-in-the-middle `suffix`), `vision`
(no projector support).
"""

from __future__ import annotations

from ohmygpu.assets.v1 import assets_pb2

COMPLETION, TOOLS, EMBEDDING, THINKING = "completion", "tools", "embedding", "thinking"
# Kinds the llama.cpp runtime generates text for (records from before kinds were recorded
# have none and are chat models).
_GENERATIVE = (assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_UNSPECIFIED)


def template_handles_tools(template: str) -> bool:
    """Whether a Jinja chat template renders the request's tools (refers to `tools`)."""
    return "tools" in template


def template_thinks(template: str) -> bool:
    """Whether a chat template has a reasoning block: it writes `<think>` (DeepSeek-R1 opens the
    answer with it, Qwen3 closes an empty one when thinking is off) or reads `enable_thinking`."""
    return "<think>" in template or "enable_thinking" in template


def chat_template(record: assets_pb2.InstallRecord) -> str:
    """The chat template the runtime renders for `record`: a derived model's own (core/derived.py),
    else its file's."""
    return record.derived.template or record.gguf.chat_template or record.transformers.chat_template


def served_by_transformers(record: assets_pb2.InstallRecord) -> bool:
    """Whether `record` is a Hugging Face format model (the transformers runtime serves it)."""
    return record.HasField("transformers") or (
        record.kind == assets_pb2.MODEL_KIND_ADAPTER and record.format == assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)


def refusal(record: assets_pb2.InstallRecord, *, tools: bool = False, response_format: bool = False,
            logprobs: bool = False, think: bool = False) -> tuple[str, str] | None:
    """(message, param) for the first feature a request asks that the runtime serving `record`
    cannot honour, or None. Only the transformers runtime lacks features today (see above)."""
    if not served_by_transformers(record):
        return None
    asked = [("tools", tools, "tool calls"), ("response_format", response_format, "a response format (JSON or a schema)"),
             ("logprobs", logprobs, "log probabilities"), ("think", think, "thinking")]
    for param, wanted, what in asked:
        if wanted:
            return (f"model '{record.name}' is served by the transformers runtime, which does not support "
                    f"{what}; leave '{param}' out, or use a GGUF of the model (llama.cpp supports it)", param)
    return None


def capabilities(record: assets_pb2.InstallRecord) -> list[str]:
    """Ollama's capability names for `record` (see the module's docstring), in Ollama's order."""
    if served_by_transformers(record):
        if record.kind in (assets_pb2.MODEL_KIND_LLM, assets_pb2.MODEL_KIND_ADAPTER):
            return [COMPLETION]
        return [EMBEDDING] if record.kind == assets_pb2.MODEL_KIND_EMBEDDING else []
    if record.format != assets_pb2.ARTIFACT_FORMAT_GGUF:
        return []
    if record.kind == assets_pb2.MODEL_KIND_EMBEDDING:
        return [EMBEDDING]
    if record.kind in _GENERATIVE:
        template = chat_template(record)
        return ([COMPLETION] + ([TOOLS] if template_handles_tools(template) else [])
                + ([THINKING] if template_thinks(template) else []))
    return []
