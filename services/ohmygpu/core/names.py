"""Validation of model names before they are stored, shown or used to build anything."""

from __future__ import annotations

import re
from urllib.parse import unquote

from ohmygpu.core.errors import InvalidName

# Ollama-style names ("smollm2", "smollm2:135m", "hf.co/org/repo:Q4_K_M"): letters, digits and
# . _ - : / only, no empty or dot-only path segments, at most 256 characters.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-:/@]{0,255}")


def parse_model_name(value: str) -> str:
    """Return the model name if it is well formed; raise InvalidName otherwise."""
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise InvalidName(
            f"invalid model name {repr(value)[:80]}: use letters, digits and . _ - : / @ "
            "(at most 256 characters, starting with a letter or digit)",
            param="model",
        )
    segments = value.split(":", 1)[0].split("@", 1)[0].split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise InvalidName(f"invalid model name {value!r}: empty or dot path segment", param="model")
    return value


def default_name_for(filename: str) -> str:
    """A model name derived from a file name ("SmolLM2-135M.Q4_1.gguf" -> "smollm2-135m.q4_1")."""
    stem = filename.rsplit("/", 1)[-1]
    for suffix in (".gguf", ".onnx"):  # a GGUF, or a Piper voice ("en_US-joe-medium.onnx")
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    cleaned = re.sub(r"[^A-Za-z0-9._\-]", "-", stem).strip("-.").lower()
    return parse_model_name(cleaned or "model")


_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,95}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,254}")
_QUANT = re.compile(r"[A-Za-z0-9_\-.]{1,40}")
_HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")
# What a link copied from the hub's web pages has after org/name: /tree/REV, /blob/REV/PATH
# (a file's page) or /resolve/REV/PATH (its download link).
_WEB_VIEWS = ("tree", "blob", "resolve")


def parse_repo_id(value: str) -> str:
    """`org/name` as the hub allows it; raises InvalidName (no `..`, no extra slashes)."""
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) for p in parts) or ".." in value:
        raise InvalidName(f"invalid repository id {repr(value)[:80]}: expected org/name", param="source")
    return value


def parse_revision(value: str) -> str:
    """A branch, tag or commit; raises InvalidName for anything that could leave a directory."""
    if (not isinstance(value, str) or _REVISION.fullmatch(value) is None or ".." in value
            or "//" in value or value.endswith("/")):
        raise InvalidName(f"invalid revision {repr(value)[:80]}", param="source")
    return value


def parse_repo_path(value: str) -> str:
    """A file path inside a repository, from the hub or a user: relative, no `..`, no
    backslash, NUL or drive; raises InvalidName."""
    if (not isinstance(value, str) or not value or len(value) > 1000 or "\\" in value or "\x00" in value
            or value.startswith("/") or re.match(r"^[A-Za-z]:", value)):
        raise InvalidName(f"invalid file name {repr(value)[:80]} in repository", param="filename")
    if any(seg in ("", ".", "..") for seg in value.split("/")):
        raise InvalidName(f"invalid file name {repr(value)[:80]} in repository", param="filename")
    return value


def parse_source(value: str) -> tuple[str, str, str]:
    """"org/repo", "org/repo@rev", "hf.co/org/repo:QUANT" -> (repo_id, revision, quant); also a
    link copied from the hub's pages: https://huggingface.co/org/repo/tree/REV, or .../blob/REV/FILE.gguf
    for that file's quantization.

    revision is "" for the default branch, quant "" when none was named. Raises InvalidName.
    """
    text = value.strip() if isinstance(value, str) else ""
    for prefix in _HUB_PREFIXES:
        if text.lower().startswith(prefix):
            return _parse_hub_link(text[len(prefix):])
    return _parse_repo_quant(text)


def _parse_hub_link(text: str) -> tuple[str, str, str]:
    """After the hub's host: what parse_source takes, or a web link (a repo at a revision,
    or one GGUF file, which stands for its quantization)."""
    text = text.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    parts = text.split("/")
    if len(parts) < 4 or parts[2] not in _WEB_VIEWS:
        return _parse_repo_quant(text)
    repo, revision, path = parse_repo_id("/".join(parts[:2])), parse_revision(unquote(parts[3])), "/".join(parts[4:])
    if not path:
        return repo, revision, ""
    quant = quant_of(path) if path.lower().endswith(".gguf") else ""
    if not quant:
        raise InvalidName(f"{path!r} names no quantization to pull; pull {repo}@{revision} "
                          f"with --include {path!r} instead", param="source")
    return repo, revision, quant


def parse_part_source(value: str) -> tuple[str, str, str, str]:
    """A further file of a multi-file diffusion model to pull: "org/repo[@rev]/path/in/repo",
    "org/repo[@rev][:QUANT]" (the repo's one weight file, or its QUANT GGUF), or a file's link
    copied from the hub (.../org/repo/blob/REV/path) -> (repo_id, revision, quant, path).
    Raises InvalidName."""
    text = value.strip() if isinstance(value, str) else ""
    for prefix in _HUB_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix):]
            web = text.split("?", 1)[0].split("#", 1)[0].rstrip("/").split("/")
            if len(web) >= 5 and web[2] in _WEB_VIEWS:
                return (parse_repo_id("/".join(web[:2])), parse_revision(unquote(web[3])), "",
                        parse_repo_path("/".join(web[4:])))
            break
    segments = text.split("/")
    if len(segments) < 3:
        repo, revision, quant = _parse_repo_quant(text)
        return repo, revision, quant, ""
    name, _, revision = segments[1].partition("@")
    return (parse_repo_id(f"{segments[0]}/{name}"), parse_revision(revision) if revision else "", "",
            parse_repo_path("/".join(segments[2:])))


def _parse_repo_quant(text: str) -> tuple[str, str, str]:
    quant = ""
    head, sep, tail = text.rpartition(":")
    if sep and "/" not in tail:
        if not _QUANT.fullmatch(tail):
            raise InvalidName(f"invalid quantization tag {tail!r}", param="source")
        text, quant = head, tail
    repo, _, revision = text.partition("@")
    return parse_repo_id(repo), parse_revision(revision) if revision else "", quant


# llama.cpp names the files of a split model PREFIX-00001-of-0000N.gguf and, given the first,
# finds the others by that name in the same directory (llama_split_path).
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def shard_names(first: str, count: int) -> list[str]:
    """The file names of a split model's parts, from its first file's name."""
    m = SHARD_NAME.match(first)
    prefix = m["prefix"] if m else first.removesuffix(".gguf")
    return [f"{prefix}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def is_later_shard(filename: str) -> bool:
    """True for parts 2..N of a split model (part 1 is the file that loads)."""
    m = SHARD_NAME.match(filename.rsplit("/", 1)[-1])
    return bool(m) and int(m["no"]) > 1


def is_projector(filename: str) -> bool:
    """A multimodal projector GGUF (mmproj-*.gguf) that ships beside a vision model's weights:
    not a model on its own and not a quantization to choose."""
    return "mmproj" in filename.rsplit("/", 1)[-1].lower()


def is_main_gguf(filename: str) -> bool:
    """Whether a GGUF file is what a runtime is given for its model: not part 2..N of a split
    model (llama.cpp finds those from part 1) and not a projector."""
    return not is_later_shard(filename) and not is_projector(filename)


def quant_of(filename: str) -> str:
    """The quantization a GGUF file name says ("model.Q4_K_M.gguf" -> "Q4_K_M"), or ""."""
    base = filename.rsplit("/", 1)[-1]
    # A split model's parts ("model.Q4_K_M-00001-of-00003.gguf") share their quantization.
    shard = SHARD_NAME.match(base)
    stem = shard["prefix"] if shard else base[: -len(".gguf")]
    m = re.search(r"(?:^|[._-])((?:I?Q\d[A-Z0-9_]*)|F16|BF16|F32)$", stem, re.I)
    return m.group(1).upper() if m else ""
