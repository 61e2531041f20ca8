"""Diffusion checkpoints told from their safetensors headers (never their data): the bounded
header reader, the family rules, registration as an image model and its memory estimate."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.diffusion import family_of
from ohmygpu.core.errors import InvalidModelFile
from ohmygpu.core.estimate import estimate
from ohmygpu.core.safetensors_header import MAX_HEADER, read_header
from ohmygpu.core.store import ModelStore

SD1 = ["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.weight",
       "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]


def write_safetensors(path: Path, names: list[str], shape: tuple[int, ...] = (2, 2), dtype: str = "F16",
                      header: dict | None = None) -> Path:
    """A real safetensors file: tiny tensors under `names` (or a raw `header` to test lies)."""
    width = {"F16": 2, "F32": 4}[dtype]
    size = width * shape[0] * shape[1]
    if header is None:
        header = {n: {"dtype": dtype, "shape": list(shape), "data_offsets": [i * size, (i + 1) * size]}
                  for i, n in enumerate(names)}
    raw = json.dumps(header).encode()
    body = b"\0" * (size * len(names))
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


@pytest.mark.parametrize("names, family", [
    (SD1, "sd1"),
    (["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"], "sd2"),
    (["model.diffusion_model.label_emb.0.0.weight", "conditioner.embedders.0.transformer.x"], "sdxl"),
    (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "sd3"),
    (["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight"], "flux"),
    (["patch_embedding.weight", "blocks.0.cross_attn.k.weight"], "wan"),
    (["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"], ""),
])
def test_family_from_tensor_names(names: list[str], family: str) -> None:
    assert family_of(names) == family


def test_header_reader_refuses_lies(tmp_path: Path) -> None:
    ok = write_safetensors(tmp_path / "ok.safetensors", SD1)
    assert set(read_header(ok)) == set(SD1)
    cases = {
        "short": b"\x01\x00",
        "huge": struct.pack("<Q", MAX_HEADER + 1) + b"{}",
        "notjson": struct.pack("<Q", 4) + b"abcd",
        "array": struct.pack("<Q", 2) + b"[]",
    }
    for name, raw in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(raw)
        with pytest.raises(InvalidModelFile):
            read_header(path)
    outside = write_safetensors(tmp_path / "outside.safetensors", ["a"], header={
        "a": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 10_000]}})
    with pytest.raises(InvalidModelFile, match="outside the file"):
        read_header(outside)
    mismatch = write_safetensors(tmp_path / "mismatch.safetensors", ["a"], header={
        "a": {"dtype": "F16", "shape": [4, 4], "data_offsets": [0, 8]}})
    with pytest.raises(InvalidModelFile, match="does not match its shape"):
        read_header(mismatch)


def test_a_checkpoint_registers_as_an_image_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    ckpt = write_safetensors(tmp_path / "tiny-sd.safetensors", SD1, shape=(4, 8))
    rec = store.add_local(ckpt, name="tiny-sd")
    assert rec.kind == assets_pb2.MODEL_KIND_IMAGE and rec.format == assets_pb2.ARTIFACT_FORMAT_SAFETENSORS
    d = rec.diffusion
    assert d.family == "sd1" and d.native_size == 512 and d.parameters == 3 * 32 and list(d.dtypes) == ["F16"]
    assert d.has_denoiser and d.has_vae and d.has_text_encoder
    assert store.get("tiny-sd").diffusion.family == "sd1"
    # The estimate budgets weights plus the compute of a native-size generation.
    est = estimate(rec, context_length=0)
    assert est.weights == ckpt.stat().st_size and est.kv_cache == 0 and est.overhead > 512 << 20
    # A safetensors file that is no diffusion model is refused, as any unusable path is.
    llm = write_safetensors(tmp_path / "llm.safetensors", ["model.layers.0.mlp.up_proj.weight"])
    with pytest.raises(InvalidModelFile, match="not a readable model"):
        store.add_local(llm, name="llm")


def write_gguf(path: Path, arch: str, names: list[str], shape: tuple[int, int] = (8, 32)) -> Path:
    """A real GGUF, written by llama.cpp's `gguf` package as the ComfyUI-GGUF converters write
    theirs: `general.architecture` naming the family, F16 tensors under `names`."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch)
    for n in names:
        writer.add_tensor(n, np.zeros(shape, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


FLUX = ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "img_in.weight"]


def test_a_flux_gguf_registers_as_an_image_model_that_lacks_its_vae_and_encoders(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    rec = store.add_local(write_gguf(tmp_path / "flux1-dev-Q8_0.gguf", "flux", FLUX), name="flux")
    assert rec.kind == assets_pb2.MODEL_KIND_IMAGE and rec.format == assets_pb2.ARTIFACT_FORMAT_GGUF
    assert not rec.HasField("gguf")  # no LLM metadata to show
    d = rec.diffusion
    assert (d.family, d.native_size, d.parameters, list(d.dtypes)) == ("flux", 1024, 3 * 8 * 32, ["F16"])
    assert d.has_denoiser and not d.has_vae and not d.has_text_encoder
    # ComfyUI-GGUF strips the UNet's prefix; the architecture key names the family.
    sdxl = store.add_local(write_gguf(tmp_path / "sdxl.gguf", "sdxl", ["input_blocks.0.0.weight",
                                                                        "label_emb.0.0.weight"]), name="sdxl")
    assert sdxl.diffusion.family == "sdxl" and sdxl.diffusion.has_denoiser


def test_a_gguf_of_an_llm_architecture_is_never_taken_for_a_diffusion_model(tmp_path: Path) -> None:
    from ohmygpu.core.diffusion import gguf_diffusion_info
    from ohmygpu.core.gguf import read_model_header

    # FLUX-like names under an architecture llama.cpp owns: llama.cpp's rules apply (no vocab).
    odd = write_gguf(tmp_path / "odd.gguf", "llama", FLUX)
    assert gguf_diffusion_info(read_model_header(odd)) is None
    # A family we do not know is refused as any unloadable file is, not guessed.
    with pytest.raises(InvalidModelFile):
        ModelStore(tmp_path / "store").add_local(write_gguf(tmp_path / "aura.gguf", "auraflow", ["x.weight"]),
                                                 name="aura")


def test_a_truncated_diffusion_gguf_is_refused_and_nothing_registers(tmp_path: Path) -> None:
    from ohmygpu.core.errors import UnloadableModel

    path = write_gguf(tmp_path / "flux.gguf", "flux", FLUX)
    path.write_bytes(path.read_bytes()[:-100])
    store = ModelStore(tmp_path / "store")
    with pytest.raises(UnloadableModel, match="past the end of the file"):
        store.add_local(path, name="flux")
    assert store.list() == []


def test_ggml_type_names_match_llama_cpps() -> None:
    import gguf
    from ohmygpu.core.gguf_check import GGML_TYPE_NAMES, GGML_TYPES

    for type_id, name in GGML_TYPE_NAMES.items():
        assert gguf.GGMLQuantizationType(type_id).name == name
    assert set(GGML_TYPES) <= set(GGML_TYPE_NAMES)
