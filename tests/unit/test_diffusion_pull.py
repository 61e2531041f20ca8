"""Which files a pull of a diffusion repository takes (core/diffusion_files.py), from the file
list alone: one single-file checkpoint and the small files beside it, never every variant and
the diffusers pipeline folders (a pipeline-only repo: one file per component)."""

from __future__ import annotations

import pytest
from ohmygpu.core import diffusion_files
from ohmygpu.core.errors import InvalidArgument, NotFound
from ohmygpu.core.hub import RemoteFile, RepoSnapshot
from ohmygpu.core.pull import select_files

GB = 1 << 30


def _snap(files: dict[str, int], repo: str = "org/sd") -> RepoSnapshot:
    return RepoSnapshot(repo, "main", "c" * 40, [RemoteFile(p, n, None, None) for p, n in files.items()])


SD15 = {  # the shape of runwayml/stable-diffusion-v1-5's file list
    "model_index.json": 600, "README.md": 14_000, "v1-inference.yaml": 2_000,
    "v1-5-pruned.safetensors": 7 * GB, "v1-5-pruned.ckpt": 7 * GB,
    "v1-5-pruned-emaonly.safetensors": 4 * GB, "v1-5-pruned-emaonly.ckpt": 4 * GB,
    "unet/diffusion_pytorch_model.safetensors": 3 * GB, "unet/diffusion_pytorch_model.fp16.safetensors": GB,
    "unet/config.json": 700, "vae/diffusion_pytorch_model.safetensors": 300 << 20, "vae/config.json": 500,
    "text_encoder/model.safetensors": 500 << 20, "tokenizer/vocab.json": 1 << 20,
}


def test_the_smallest_checkpoint_and_the_small_top_level_files() -> None:
    snap = _snap(SD15)
    assert diffusion_files.is_diffusion_repo(snap)
    choice = diffusion_files.choose(snap, "")
    assert choice.checkpoint == "v1-5-pruned-emaonly.safetensors"
    assert sorted(f.path for f in choice.files) == [
        "README.md", "model_index.json", "v1-5-pruned-emaonly.safetensors", "v1-inference.yaml"]
    assert "picked v1-5-pruned-emaonly.safetensors" in choice.note and "v1-5-pruned.safetensors" in choice.note
    assert ".ckpt" not in choice.note  # pickles are never taken


def test_a_tag_names_a_checkpoint_by_a_word_of_its_name() -> None:
    snap = _snap({"sd_xl_turbo_1.0.safetensors": 13 * GB, "sd_xl_turbo_1.0_fp16.safetensors": 6 * GB,
                  "model_index.json": 600})
    assert diffusion_files.choose(snap, "FP16").checkpoint == "sd_xl_turbo_1.0_fp16.safetensors"
    assert diffusion_files.choose(snap, "sd_xl_turbo_1.0").checkpoint == "sd_xl_turbo_1.0.safetensors"
    with pytest.raises(NotFound, match="no checkpoint of org/sd is named with 'q8'.*sd_xl_turbo_1.0.safetensors"):
        diffusion_files.choose(snap, "q8")


def test_parts_and_add_ons_are_never_the_checkpoint() -> None:
    snap = _snap({"vae-ft-mse-840000.safetensors": 300 << 20, "model-lora.safetensors": 10 << 20,
                  "dreamshaper_8.safetensors": 2 * GB})
    assert diffusion_files.is_diffusion_repo(snap)  # checkpoints at the top, no config.json
    assert diffusion_files.choose(snap, "").checkpoint == "dreamshaper_8.safetensors"


def test_a_ckpt_only_repo_is_refused_for_its_pickles() -> None:
    with pytest.raises(InvalidArgument, match="pickles"):
        diffusion_files.choose(_snap({"sd-v1-4.ckpt": 4 * GB, "README.md": 100}), "")


def test_a_pipeline_only_repo_takes_one_file_per_component() -> None:
    files = {k: v for k, v in SD15.items() if "/" in k or k == "model_index.json"}
    picked = {f.path for f in select_files(_snap(files), quant="", include=[], exclude=[])}
    assert picked == {"model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors", "unet/config.json",
                      "vae/diffusion_pytorch_model.safetensors", "vae/config.json",
                      "text_encoder/model.safetensors", "tokenizer/vocab.json"}
    # ... and one it cannot run is refused before any download.
    del files["text_encoder/model.safetensors"]
    with pytest.raises(InvalidArgument, match="diffusers pipeline without safetensors weights for its text_encoder"):
        select_files(_snap(files), quant="", include=[], exclude=[])


def test_other_repos_are_not_diffusion_repos() -> None:
    llm = _snap({"config.json": 700, "model.safetensors": GB, "tokenizer.json": 2 << 20})
    assert not diffusion_files.is_diffusion_repo(llm)
    assert {f.path for f in select_files(llm, quant="", include=[], exclude=[])} == {
        "config.json", "model.safetensors", "tokenizer.json"}
    whisper = _snap({"config.json": 2000, "model.bin": 75 << 20, "vocabulary.txt": 400_000})
    assert not diffusion_files.is_diffusion_repo(whisper)


def test_include_patterns_still_take_files_by_hand() -> None:
    picked = select_files(_snap(SD15), quant="", include=["unet/*", "vae/*"], exclude=[])
    assert all(f.path.startswith(("unet/", "vae/")) for f in picked) and len(picked) == 5


def test_select_files_takes_the_choice_and_a_tag() -> None:
    picked = {f.path for f in select_files(_snap(SD15), quant="pruned", include=[], exclude=[])}
    # "pruned" is a word of both names: the smaller one, with the small files beside it.
    assert picked == {"v1-5-pruned-emaonly.safetensors", "model_index.json", "README.md", "v1-inference.yaml"}


def test_a_tag_only_the_pipeline_has_takes_the_pipeline_of_a_repo_with_both_layouts() -> None:
    both = {**SD15, "unet/diffusion_pytorch_model.non_ema.safetensors": 3 * GB}
    choice = diffusion_files.choose(_snap(both), "non_ema")
    assert choice.checkpoint == "model_index.json"
    assert "unet/diffusion_pytorch_model.non_ema.safetensors" in {f.path for f in choice.files}
    assert not any(f.path.endswith("pruned.safetensors") for f in choice.files)
    # A tag a single file has keeps the single file; one nothing has names the checkpoints.
    assert diffusion_files.choose(_snap(both), "emaonly").checkpoint == "v1-5-pruned-emaonly.safetensors"
    with pytest.raises(NotFound, match="is named with 'q8'.*or the diffusers pipeline's variants: fp16, non_ema"):
        diffusion_files.choose(_snap(both), "q8")


def test_a_top_level_add_on_of_a_pipeline_repo_is_not_its_checkpoint() -> None:
    files = {k: v for k, v in SD15.items() if "/" in k or k == "model_index.json"}
    files["sd-vae-ft-mse.safetensors"] = 320 << 20
    choice = diffusion_files.choose(_snap(files), "")
    assert choice.checkpoint == "model_index.json"
    assert "sd-vae-ft-mse.safetensors" not in {f.path for f in choice.files}


WAN = {  # the shape of Comfy-Org/Wan_2.1_ComfyUI_repackaged's file list (ComfyUI's model folders)
    "README.md": 3_000,
    "split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors": 2.8 * GB,
    "split_files/diffusion_models/wan2.1_t2v_14B_fp16.safetensors": 28 * GB,
    "split_files/diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors": 14 * GB,
    "split_files/text_encoders/umt5_xxl_fp16.safetensors": 11 * GB,
    "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": 6.7 * GB,
    "split_files/vae/wan_2.1_vae.safetensors": 250 << 20,
    "split_files/clip_vision/clip_vision_h.safetensors": 1.2 * GB,
}


def test_a_repo_in_comfyuis_folders_takes_one_model_vae_and_each_text_encoder() -> None:
    snap = _snap({k: int(v) for k, v in WAN.items()}, "Comfy-Org/wan")
    assert diffusion_files.is_diffusion_repo(snap)
    choice = diffusion_files.choose(snap, "")
    assert choice.checkpoint == "split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"
    assert sorted(f.path for f in choice.files) == [
        "README.md", "split_files/diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors",
        "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",  # one precision of the one encoder
        "split_files/vae/wan_2.1_vae.safetensors"]
    assert "name others with :TAG" in choice.note
    # The tag names the diffusion model by a word of its name; the rest stays the smallest.
    big = diffusion_files.choose(snap, "14B")
    assert big.checkpoint == "split_files/diffusion_models/wan2.1_t2v_14B_fp8_e4m3fn.safetensors"
    assert "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors" in {f.path for f in big.files}
    with pytest.raises(NotFound, match="no file of Comfy-Org/wan is named with 'q8'.*wan2.1_t2v_1.3B_fp16"):
        diffusion_files.choose(snap, "q8")
    # A pull registers the VAE and the text encoder as parts of the diffusion model.
    picked = select_files(snap, quant="", include=[], exclude=[])
    assert [f.path for f in diffusion_files.split_parts(snap, picked)] == [
        "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "split_files/vae/wan_2.1_vae.safetensors"]
