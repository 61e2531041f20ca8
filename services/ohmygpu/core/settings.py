"""Every setting of ohmygpu, in one place: name, type, default, environment variable, meaning.

Precedence: command-line flag > environment (`OMG_*`) > config file (`$OMG_HOME/config.toml`,
or `OMG_CONFIG`) > default. `Settings.describe()` lists each value with its source, for
`omg config`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ohmygpu.core.errors import InvalidArgument


@dataclass(frozen=True)
class Setting:
    """One setting's definition."""

    name: str
    env: str
    default: Any
    kind: type
    help: str


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


SETTINGS: tuple[Setting, ...] = (
    Setting("home", "OMG_HOME", "~/.ohmygpu", str, "state directory: store index, logs, sockets"),
    Setting("http_addr", "OMG_HTTP_ADDR", "127.0.0.1:11434", str,
            "HTTP listen address (OpenAI, Ollama and management APIs)"),
    Setting("grpc_addr", "OMG_GRPC_ADDR", "127.0.0.1:11435", str,
            "gRPC listen address of the daemon; clients connect here too"),
    Setting("token", "OMG_TOKEN", "", str,
            "bearer token required by the daemon and sent by clients; required off loopback"),
    Setting("admin_token", "OMG_ADMIN_TOKEN", "", str,
            "when set, management (pull, add, rm, gc, runs, unload, shutdown) needs this token"),
    Setting("mcp_tools", "OMG_MCP_TOOLS", "chat,list_models,status,pull_model,transcribe,generate_image,speak", str,
            "tools `omg mcp` offers (comma-separated)"),
    Setting("host", "OMG_HOST", "", str,
            "daemon clients talk to: host[:port], grpcs://host[:port] for TLS (empty: OMG_GRPC_ADDR)"),
    Setting("tls_cert", "OMG_TLS_CERT", "", str, "PEM certificate the daemon serves HTTP and gRPC with (TLS)"),
    Setting("tls_key", "OMG_TLS_KEY", "", str, "PEM private key for OMG_TLS_CERT"),
    Setting("tls_ca", "OMG_TLS_CA", "", str,
            "PEM CA (or self-signed cert) clients trust for a TLS daemon; empty: system roots"),
    Setting("allowed_hosts", "OMG_ALLOWED_HOSTS", "", str,
            "extra Host header values accepted (comma-separated), besides loopback names"),
    Setting("cors_origins", "OMG_CORS_ORIGINS", "", str,
            "origins allowed by CORS (comma-separated); empty allows none"),
    Setting("num_threads", "OMG_NUM_THREADS", 0, int,
            "CPU threads per inference worker; 0 uses every core"),
    Setting("context_length", "OMG_CONTEXT_LENGTH", 0, int,
            "default context window in tokens (capped at the model's own); 0: the model's own, at most 8192"),
    Setting("max_body_mb", "OMG_MAX_BODY_MB", 32, int, "largest HTTP request body, in MiB"),
    Setting("max_messages", "OMG_MAX_MESSAGES", 10_000, int, "most messages one chat request may hold"),
    Setting("max_text_chars", "OMG_MAX_TEXT_CHARS", 8_000_000, int,
            "most characters of text (all strings together) one JSON request may hold"),
    Setting("http_max_header_kb", "OMG_HTTP_MAX_HEADER_KB", 64, int,
            "largest HTTP request line plus headers, in KiB (past it: 431)"),
    Setting("http_max_url_kb", "OMG_HTTP_MAX_URL_KB", 16, int, "longest HTTP request URL, in KiB (past it: 414)"),
    Setting("http_max_headers", "OMG_HTTP_MAX_HEADERS", 100, int, "most header lines in one HTTP request (past it: 431)"),
    Setting("http_header_timeout_s", "OMG_HTTP_HEADER_TIMEOUT", 10.0, float,
            "seconds a client may take to send a request's line and headers"),
    Setting("http_body_timeout_s", "OMG_HTTP_BODY_TIMEOUT", 30.0, float,
            "seconds a request body may stall between two reads"),
    Setting("http_max_connections", "OMG_HTTP_MAX_CONNECTIONS", 512, int,
            "open HTTP connections at most; past it the longest-idle one is closed"),
    Setting("max_tokens_limit", "OMG_MAX_TOKENS_LIMIT", 1 << 20, int,
            "largest max_tokens a request may ask for"),
    Setting("worker_start_timeout_s", "OMG_WORKER_START_TIMEOUT", 120.0, float,
            "seconds a worker may take to start and load its model"),
    Setting("template_timeout_s", "OMG_TEMPLATE_TIMEOUT", 2.0, float,
            "seconds a chat template may take to render before the request fails"),
    Setting("log_level", "OMG_LOG_LEVEL", "info", str, "daemon log level"),
    Setting("keep_alive", "OMG_KEEP_ALIVE", "5m", str,
            "how long an idle model stays loaded (ollama syntax: 5m, 30s, 0 unloads at once, -1 never)"),
    Setting("max_loaded_models", "OMG_MAX_LOADED_MODELS", 3, int,
            "models loaded at once; loading one more unloads the least recently used idle one"),
    Setting("num_parallel", "OMG_NUM_PARALLEL", 1, int,
            "requests one model serves at once (sequences decoded together in one batched context, "
            "each with its own KV window); more wait in its queue"),
    Setting("max_queue", "OMG_MAX_QUEUE", 512, int,
            "requests that may wait, per model and overall; past it: 503 server busy"),
    Setting("health_interval_s", "OMG_HEALTH_INTERVAL", 2.0, float,
            "seconds between health checks of each worker"),
    Setting("health_timeout_s", "OMG_HEALTH_TIMEOUT", 3.0, float,
            "a worker that misses two health answers this long is hung and is killed"),
    Setting("max_crashes", "OMG_MAX_CRASHES", 3, int,
            "crashes within 10 minutes after which a model is marked failed instead of restarted"),
    Setting("ram_budget_mb", "OMG_RAM_BUDGET_MB", 0, int,
            "memory models may use on the CPU, in MiB; 0: 90% of the RAM available at start"),
    Setting("vram_budget_mb", "OMG_VRAM_BUDGET_MB", 0, int,
            "GPU memory our models may use per GPU, in MiB; 0: all that is free"),
    Setting("vram_reserve_mb", "OMG_VRAM_RESERVE_MB", 512, int,
            "GPU memory always left free for other programs, in MiB"),
    Setting("partial_offload", "OMG_PARTIAL_OFFLOAD", 1, int,
            "1: put as many layers on the GPU as fit when a model does not fit whole; 0: use the CPU"),
    Setting("max_audio_mb", "OMG_MAX_AUDIO_MB", 512, int,
            "largest audio upload for transcription, in MiB"),
    Setting("max_blob_gb", "OMG_MAX_BLOB_GB", 512, int,
            "largest file uploaded to make a model from (Ollama's POST /api/blobs), in GiB"),
    Setting("image_max_size", "OMG_IMAGE_MAX_SIZE", 2048, int,
            "largest image side a generation may ask for, in pixels (memory grows with the pixels)"),
    Setting("image_max_steps", "OMG_IMAGE_MAX_STEPS", 150, int,
            "most denoising steps a generation may ask for"),
    Setting("image_max_count", "OMG_IMAGE_MAX_COUNT", 10, int,
            "most images one request may ask for (OpenAI's n)"),
    Setting("max_image_mb", "OMG_MAX_IMAGE_MB", 32, int,
            "largest input image (image to image), in MiB"),
    Setting("max_audio_seconds", "OMG_MAX_AUDIO_SECONDS", 3600, int,
            "longest audio transcribed, in seconds (checked before decoding: memory grows with it)"),
    Setting("audio_probe_timeout_s", "OMG_AUDIO_PROBE_TIMEOUT", 10.0, float,
            "time an upload's check (a child process reading its header) may take before the upload is refused"),
    Setting("audio_probe_memory_mb", "OMG_AUDIO_PROBE_MEMORY_MB", 1024, int,
            "address space of the child process that checks an audio upload, in MiB (0: unbounded)"),
    Setting("whisper_compute_type", "OMG_WHISPER_COMPUTE_TYPE", "auto", str,
            "CTranslate2 compute type for whisper (auto: int8 on CPU, float16 on GPU)"),
    Setting("whisper_beam_size", "OMG_WHISPER_BEAM_SIZE", 5, int, "default beam width for transcription"),
    Setting("default_whisper_model", "OMG_WHISPER_MODEL", "", str,
            "model `omg transcribe` uses without --model (empty: the store's only whisper model)"),
    Setting("max_speech_chars", "OMG_MAX_SPEECH_CHARS", 4096, int,
            "most characters of text one speech request may hold (OpenAI's limit is 4096)"),
    Setting("default_tts_model", "OMG_TTS_MODEL", "", str,
            "model OpenAI's tts-1 / tts-1-hd / gpt-4o-mini-tts names and `omg say` use (empty: the store's first)"),
    Setting("hf_endpoint", "HF_ENDPOINT", "https://huggingface.co", str,
            "Hugging Face hub to pull from (or a mirror speaking its protocol)"),
    Setting("hf_token", "HF_TOKEN", "", str,
            "token for gated/private repos; default: the one `huggingface-cli login` saved"),
    Setting("hf_hub_cache", "HF_HUB_CACHE", "", str,
            "Hugging Face cache shared with other tools; default: $HF_HOME/hub or ~/.cache/huggingface/hub"),
    Setting("max_rate", "OMG_MAX_RATE", 0, int, "download bandwidth limit in bytes/s; 0 is unlimited"),
    Setting("pull_parallel", "OMG_PULL_PARALLEL", 4, int, "files downloaded at once per pull"),
    # Nodes: the daemon side.
    Setting("node_token", "OMG_NODE_TOKEN", "", str,
            "join token nodes must present (`omg node join --token`); empty: no node is accepted "
            "and the node listener is off"),
    Setting("node_addr", "OMG_NODE_ADDR", "0.0.0.0:11436", str,
            "where nodes join the daemon (TLS always; only with OMG_NODE_TOKEN set)"),
    Setting("node_heartbeat_s", "OMG_NODE_HEARTBEAT_S", 1.0, float, "how often nodes report, in seconds"),
    Setting("node_down_after_s", "OMG_NODE_DOWN_AFTER_S", 5.0, float,
            "a node silent this long is marked down and its models placed elsewhere, in seconds"),
    Setting("placement", "OMG_PLACEMENT", "spread", str,
            "among nodes that fit a model equally well: spread (the most free memory) or pack (the least)"),
    # Nodes: the agent side (`omg node join`).
    Setting("node_join", "OMG_NODE_JOIN", "", str, "the daemon's node address (host:port) `omg node join` connects to"),
    Setting("node_name", "OMG_NODE_NAME", "", str, "this node's name among the daemon's nodes; default: the host name"),
    Setting("node_listen", "OMG_NODE_LISTEN", "0.0.0.0:11437", str,
            "where this node's agent listens for the daemon it joined (TLS, the session's secret)"),
    Setting("node_advertise", "OMG_NODE_ADVERTISE", "", str,
            "the agent address the daemon dials; default: the address the daemon sees this node at, "
            "with OMG_NODE_LISTEN's port"),
    Setting("node_labels", "OMG_NODE_LABELS", "", str, "this node's labels, k=v,k2=v2 (RunSpecs select by them)"),
    Setting("node_fingerprint", "OMG_NODE_FINGERPRINT", "", str,
            "sha256 fingerprint of the daemon's node certificate (`omg serve` prints it); the node trusts only that"),
    Setting("node_ca", "OMG_NODE_CA", "", str, "PEM certificate to trust for the daemon instead of a fingerprint"),
    Setting("node_hub", "OMG_NODE_HUB", "auto", str,
            "whether this node pulls models from the hub itself: on, off, auto (if HF_ENDPOINT answers); "
            "without, the daemon streams the files"),
    Setting("node_inventory", "OMG_NODE_INVENTORY", "", str,
            "JSON that replaces this node's measured inventory (ram_total, ram_available, cpu_count, "
            "gpus): for shaping test machines"),
)


@dataclass(frozen=True)
class Settings:
    """Resolved settings; build with Settings.load()."""

    home: str
    http_addr: str
    grpc_addr: str
    token: str
    admin_token: str
    mcp_tools: str
    host: str
    tls_cert: str
    tls_key: str
    tls_ca: str
    allowed_hosts: str
    cors_origins: str
    num_threads: int
    context_length: int
    max_body_mb: int
    max_messages: int
    max_text_chars: int
    http_max_header_kb: int
    http_max_url_kb: int
    http_max_headers: int
    http_header_timeout_s: float
    http_body_timeout_s: float
    http_max_connections: int
    max_tokens_limit: int
    worker_start_timeout_s: float
    template_timeout_s: float
    log_level: str
    keep_alive: str
    max_loaded_models: int
    num_parallel: int
    max_queue: int
    health_interval_s: float
    health_timeout_s: float
    max_crashes: int
    ram_budget_mb: int
    vram_budget_mb: int
    vram_reserve_mb: int
    partial_offload: int
    max_audio_mb: int
    max_blob_gb: int
    image_max_size: int
    image_max_steps: int
    image_max_count: int
    max_image_mb: int
    max_audio_seconds: int
    audio_probe_timeout_s: float
    audio_probe_memory_mb: int
    whisper_compute_type: str
    whisper_beam_size: int
    default_whisper_model: str
    max_speech_chars: int
    default_tts_model: str
    hf_endpoint: str
    hf_token: str
    hf_hub_cache: str
    max_rate: int
    pull_parallel: int
    node_token: str
    node_addr: str
    node_heartbeat_s: float
    node_down_after_s: float
    placement: str
    node_join: str
    node_name: str
    node_listen: str
    node_advertise: str
    node_labels: str
    node_fingerprint: str
    node_ca: str
    node_hub: str
    node_inventory: str
    sources: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(
        cls,
        *,
        overrides: dict[str, Any] | None = None,
        environ: dict[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting; raises InvalidArgument for a value of the wrong type."""
        env = dict(os.environ if environ is None else environ)
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        home_raw = overrides.get("home") or env.get("OMG_HOME") or "~/.ohmygpu"
        config_path = Path(env.get("OMG_CONFIG") or Path(home_raw).expanduser() / "config.toml")
        file_values: dict[str, Any] = {}
        if config_path.is_file():
            try:
                file_values = tomllib.loads(config_path.read_text())
            except tomllib.TOMLDecodeError as e:
                raise InvalidArgument(f"config file {config_path}: {e}") from e
        values: dict[str, Any] = {}
        sources: list[tuple[str, str]] = []
        for s in SETTINGS:
            if s.name in overrides:
                raw, source = overrides[s.name], "flag"
            elif s.env in env:
                raw, source = env[s.env], f"env {s.env}"
            elif s.name in file_values:
                raw, source = file_values[s.name], f"file {config_path}"
            else:
                raw, source = s.default, "default"
            try:
                values[s.name] = s.kind(raw)
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"setting {s.name} ({source}): {raw!r} is not {s.kind.__name__}") from e
            sources.append((s.name, source))
        values["home"] = str(Path(values["home"]).expanduser())
        if not values["hf_hub_cache"]:
            hf_home = env.get("HF_HOME") or str(Path("~/.cache/huggingface").expanduser())
            values["hf_hub_cache"] = str(Path(hf_home) / "hub")
        values["hf_hub_cache"] = str(Path(values["hf_hub_cache"]).expanduser())
        if values["num_threads"] <= 0:
            values["num_threads"] = _default_threads()
        return cls(**values, sources=tuple(sources))

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    def client_target(self) -> tuple[str, bool]:
        """(host:port, use TLS) that clients connect to: OMG_HOST, else OMG_GRPC_ADDR. A
        grpcs:// or https:// scheme, or a configured OMG_TLS_CA, means TLS."""
        raw = (self.host or self.grpc_addr).strip()
        scheme, sep, rest = raw.partition("://")
        if not sep:
            scheme, rest = "", raw
        if scheme not in ("", "grpc", "grpcs", "http", "https"):
            raise InvalidArgument(f"OMG_HOST {raw!r}: use host[:port] or grpcs://host[:port]")
        rest = rest.rstrip("/")
        if rest.startswith("["):  # [v6]:port
            has_port = "]:" in rest
        else:
            has_port = rest.count(":") == 1
        target = rest if has_port else f"{rest}:11435"
        return target, scheme in ("grpcs", "https") or bool(self.tls_ca)

    def hub_token(self) -> str | None:
        """HF_TOKEN, else the token huggingface_hub saved at login, else None."""
        if self.hf_token:
            return self.hf_token
        try:
            from huggingface_hub import get_token

            return get_token()
        except ImportError:
            return None

    def describe(self) -> list[dict[str, str]]:
        """Each setting with its value, source and meaning (for `omg config`)."""
        source = dict(self.sources)
        out = []
        for s in SETTINGS:
            value = getattr(self, s.name)
            shown = "***" if s.name in SECRET_SETTINGS and value else str(value)
            out.append({"name": s.name, "env": s.env, "value": shown,
                        "source": source.get(s.name, "default"), "help": s.help})
        return out


# Settings whose values are never shown (omg config, logs): masked as "***" when set.
SECRET_SETTINGS = frozenset({"token", "admin_token", "hf_token", "node_token"})


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list of its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


assert {f.name for f in fields(Settings)} - {"sources"} == {s.name for s in SETTINGS}
