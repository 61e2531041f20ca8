"""The diffusers pipeline layout (core/diffusion_pipeline.py): which weight file of each component
a pull or add takes, what is refused before any download, and the family from the headers."""

from __future__ import annotations

import pytest
from ohmygpu.core import diffusion_pipeline as dp
from ohmygpu.core.errors import InvalidArgument, NotFound
from ohmygpu.core.safetensors_header import TensorEntry

GB = 1 << 30
MB = 1 << 20

SD15 = {  # runwayml/stable-diffusion-v1-5's pipeline folders, sizes rounded
    "model_index.json": 600, "README.md": 14_000,
    "unet/config.json": 700, "unet/diffusion_pytorch_model.safetensors": 3 * GB,
    "unet/diffusion_pytorch_model.fp16.safetensors": GB + 600 * MB,
    "unet/diffusion_pytorch_model.non_ema.safetensors": 3 * GB, "unet/diffusion_pytorch_model.bin": 3 * GB,
    "vae/config.json": 500, "vae/diffusion_pytorch_model.safetensors": 320 * MB,
    "vae/diffusion_pytorch_model.fp16.safetensors": 160 * MB,
    "text_encoder/config.json": 600, "text_encoder/model.safetensors": 490 * MB,
    "text_encoder/model.fp16.safetensors": 245 * MB, "text_encoder/pytorch_model.bin": 490 * MB,
    "tokenizer/vocab.json": MB, "tokenizer/merges.txt": 500_000, "scheduler/scheduler_config.json": 300,
    "safety_checker/model.safetensors": GB, "safety_checker/config.json": 4000,
    "feature_extractor/preprocessor_config.json": 500, "onnx/unet/model.onnx": 3 * GB,
}
SMALL = ["README.md", "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
         "tokenizer/merges.txt", "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]


def test_the_smallest_variant_of_each_component_and_the_small_files() -> None:
    paths, note = dp.choose(SD15, "org/sd15")
    assert paths == ["unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
                     "text_encoder/model.fp16.safetensors", *SMALL]
    assert "other variants: non_ema, plain" in note and ":TAG" in note
    assert not any(p.startswith(("safety_checker/", "onnx/", "feature_extractor/")) for p in paths)


def test_a_tag_names_the_variant_and_components_without_it_take_their_plain_file() -> None:
    weights = dp.choose_weights(SD15, "org/sd15", "non_ema")
    assert weights == {"unet": "unet/diffusion_pytorch_model.non_ema.safetensors",
                       "vae": "vae/diffusion_pytorch_model.safetensors",  # no non_ema: its plain file
                       "text_encoder": "text_encoder/model.safetensors"}
    assert dp.choose_weights(SD15, "org/sd15", "plain")["unet"] == "unet/diffusion_pytorch_model.safetensors"
    assert dp.choose_weights(SD15, "org/sd15", "FP16")["unet"] == "unet/diffusion_pytorch_model.fp16.safetensors"
    with pytest.raises(NotFound, match="no component of org/sd15 has a 'q8' variant; available: fp16, non_ema, plain"):
        dp.choose_weights(SD15, "org/sd15", "q8")


def test_plain_files_only_are_taken_as_they_are() -> None:
    plain = {k: v for k, v in SD15.items() if ".fp16." not in k and ".non_ema." not in k}
    paths, note = dp.choose(plain, "org/sd")
    assert paths[:3] == ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                         "text_encoder/model.safetensors"] and note == ""


def test_sdxl_takes_its_second_text_encoder() -> None:
    xl = {**SD15, "text_encoder_2/model.safetensors": 2 * GB, "text_encoder_2/config.json": 600,
          "tokenizer_2/vocab.json": MB}
    paths, _ = dp.choose(xl, "org/sdxl")
    assert "text_encoder_2/model.safetensors" in paths and "tokenizer_2/vocab.json" in paths


def test_pipelines_sdcpp_cannot_run_are_refused_by_name() -> None:
    flux = {"model_index.json": 600, "transformer/diffusion_pytorch_model-00001-of-00003.safetensors": 10 * GB,
            "vae/diffusion_pytorch_model.safetensors": 160 * MB, "text_encoder/model.safetensors": 246 * MB}
    with pytest.raises(InvalidArgument, match="diffusion transformer .*single-file or GGUF release"):
        dp.choose_weights(flux, "org/flux")
    sharded = {**SD15, "unet/diffusion_pytorch_model-00001-of-00002.safetensors": 2 * GB}
    for k in ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
              "unet/diffusion_pytorch_model.non_ema.safetensors"):
        del sharded[k]
    with pytest.raises(InvalidArgument, match="splits its unet weights into shards"):
        dp.choose_weights(sharded, "org/sharded")
    pickles = {k: v for k, v in SD15.items() if not (k.startswith("text_encoder/") and k.endswith(".safetensors"))}
    with pytest.raises(InvalidArgument, match="without safetensors weights for its text_encoder .*pytorch_model.bin"):
        dp.choose_weights(pickles, "org/pickles")


def test_sharded_variants_are_shards_not_variants() -> None:
    assert dp.weight_file("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors").variant == "sharded"
    only = {k: v for k, v in SD15.items() if not k.startswith("unet/diffusion_pytorch_model")}
    only.update({"unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors": GB,
                 "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors": GB})
    with pytest.raises(InvalidArgument, match="splits its unet weights into shards"):
        dp.choose_weights(only, "org/sharded")


def test_a_scalar_embedding_tensor_is_an_unknown_family_not_a_crash() -> None:
    odd = {"text_model.embeddings.token_embedding.weight": TensorEntry("F16", ())}
    assert dp.pipeline_info({"unet": {}, "vae": {}, "text_encoder": odd}).family == "unknown"


def test_a_shard_beside_a_whole_file_is_ignored() -> None:
    both = {**SD15, "unet/diffusion_pytorch_model-00001-of-00002.safetensors": GB}
    assert dp.choose_weights(both, "org/sd")["unet"] == "unet/diffusion_pytorch_model.fp16.safetensors"


def test_weight_file_names() -> None:
    assert dp.weight_file("unet/diffusion_pytorch_model.fp16.safetensors") == dp.WeightFile(
        "unet", "fp16", "unet/diffusion_pytorch_model.fp16.safetensors")
    assert dp.weight_file("text_encoder/model.safetensors").variant == ""
    assert dp.weight_file("text_encoder/pytorch_model.bin") is None
    assert dp.weight_file("safety_checker/model.safetensors") is None
    assert dp.weight_file("onnx/unet/model.safetensors") is None
    assert list(dp.components(["model_index.json", "vae/diffusion_pytorch_model.fp16.safetensors",
                               "text_encoder/model.safetensors", "unet/config.json",
                               "unet/diffusion_pytorch_model.safetensors"]).items()) == [
        ("unet", "unet/diffusion_pytorch_model.safetensors"), ("vae", "vae/diffusion_pytorch_model.fp16.safetensors"),
        ("text_encoder", "text_encoder/model.safetensors")]  # the UNet first: the model's digest is its


def _clip(width: int) -> dict[str, TensorEntry]:
    return {"text_model.embeddings.token_embedding.weight": TensorEntry("F16", (49408, width)),
            "text_model.final_layer_norm.weight": TensorEntry("F32", (width,))}


def test_the_family_is_told_as_sdcpp_tells_it() -> None:
    unet = {"conv_in.weight": TensorEntry("F16", (320, 4, 3, 3))}
    vae = {"decoder.conv_in.weight": TensorEntry("F16", (512, 4, 3, 3))}
    sd1 = dp.pipeline_info({"unet": unet, "vae": vae, "text_encoder": _clip(768)})
    assert (sd1.family, sd1.native_size, sd1.has_denoiser, sd1.has_vae, sd1.has_text_encoder) == (
        "sd1", 512, True, True, True)
    assert sd1.parameters == 320 * 4 * 9 + 512 * 4 * 9 + 49408 * 768 + 768 and sd1.dtypes == ["F16", "F32"]
    assert dp.pipeline_info({"unet": unet, "vae": vae, "text_encoder": _clip(1024)}).family == "sd2"
    xl_unet = {**unet, "add_embedding.linear_1.weight": TensorEntry("F16", (1280, 2816))}
    xl = dp.pipeline_info({"unet": xl_unet, "vae": vae, "text_encoder": _clip(768)})
    assert xl.family == "sdxl" and not xl.has_text_encoder  # its second encoder is missing
    assert dp.pipeline_info({"unet": xl_unet, "vae": vae, "text_encoder": _clip(768),
                             "text_encoder_2": _clip(1280)}).has_text_encoder
    assert not dp.pipeline_info({"unet": unet, "text_encoder": _clip(768)}).has_vae


def test_the_worker_shows_sdcpp_each_variant_under_its_plain_name(tmp_path) -> None:
    from ohmygpu.assets.v1 import assets_pb2
    from ohmygpu.runtimes.sdcpp.pipeline_view import ModelFiles

    record = assets_pb2.InstallRecord(format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)
    for rel in ("model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors", "unet/config.json",
                "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.fp16.safetensors"):
        path = tmp_path / "snapshot" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rel)
        record.artifacts.add(filename=rel, local_path=str(path))
    files = ModelFiles(record)
    view = files.path
    assert view is not None and not view.startswith(str(tmp_path))  # the worker's own folder
    from pathlib import Path

    shown = {p.relative_to(view).as_posix(): p.read_text() for p in Path(view).rglob("*.safetensors")}
    assert shown == {"unet/diffusion_pytorch_model.safetensors": "unet/diffusion_pytorch_model.fp16.safetensors",
                     "vae/diffusion_pytorch_model.safetensors": "vae/diffusion_pytorch_model.safetensors",
                     "text_encoder/model.safetensors": "text_encoder/model.fp16.safetensors"}
    files.close()
    assert not Path(view).exists() and (tmp_path / "snapshot" / "unet" / "config.json").exists()

    single = assets_pb2.InstallRecord(format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)
    single.artifacts.add(filename="README.md", local_path="/m/README.md", format=assets_pb2.ARTIFACT_FORMAT_OTHER)
    single.artifacts.add(filename="sd.safetensors", local_path="/m/sd.safetensors",
                         format=assets_pb2.ARTIFACT_FORMAT_SAFETENSORS)
    assert ModelFiles(single).path == "/m/sd.safetensors"
    # A single-file repo's model_index.json beside its checkpoint makes no pipeline of it.
    single.artifacts.add(filename="model_index.json", local_path="/m/model_index.json")
    assert ModelFiles(single).path == "/m/sd.safetensors"
    no_unet = assets_pb2.InstallRecord()
    no_unet.artifacts.add(filename="model_index.json", local_path="/m/model_index.json")
    assert ModelFiles(no_unet).path is None
