"""The sdcpp worker's request rules and image helpers, without the library: defaults, bounds,
sampler names, Automatic1111's parameters text and its PNG chunk, the init-image check."""

from __future__ import annotations

import io

import pytest
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.sdcpp import png
from ohmygpu.runtimes.sdcpp.params import BadRequest, plan
from PIL import Image


def _plan(**kw):
    return plan(runtime_pb2.GenerateImageRequest(**kw), default_sampler="euler_a")


def test_defaults() -> None:
    p = _plan(prompt="a cat")
    assert (p.width, p.height, p.steps, p.cfg_scale, p.sampler, p.count, p.strength) == \
        (512, 512, 20, 7.0, "euler_a", 1, 0.75)
    assert 0 <= p.seed < 2**32 and not p.has_init_image


def test_init_image_size_is_the_default_size() -> None:
    p = plan(runtime_pb2.GenerateImageRequest(), default_sampler="euler_a", init_size=(301, 5000))
    assert (p.width, p.height) == (296, 2048) and p.has_init_image


def test_parameters_text_is_automatic1111s() -> None:
    p = _plan(prompt="a cat", negative_prompt="dogs", seed=42, steps=20, width=512, height=512)
    assert p.parameters(1, "sd15") == ("a cat\nNegative prompt: dogs\nSteps: 20, Sampler: Euler a, "
                                       "CFG scale: 7, Seed: 43, Size: 512x512, Model: sd15")
    assert "Negative prompt" not in _plan(prompt="x", seed=1).parameters(0, "m")


@pytest.mark.parametrize("name, key", [("dpm++2m", "dpm++2m"), ("DPM++ 2M", "dpm++2m"),
                                       ("Euler a", "euler_a"), ("euler", "euler")])
def test_sampler_names(name: str, key: str) -> None:
    assert _plan(sampler=name).sampler == key


@pytest.mark.parametrize("kw", [{"width": 65}, {"width": 56}, {"height": 2056}, {"steps": 501},
                                {"cfg_scale": float("nan")}, {"strength": -0.1}, {"count": 17},
                                {"sampler": "nope"}, {"seed": 2**63 - 1, "count": 2}])
def test_bounds(kw: dict) -> None:
    with pytest.raises(BadRequest):
        _plan(**kw)


def test_png_carries_parameters_and_init_images_are_checked() -> None:
    data = png.encode(Image.new("RGBA", (16, 8), (1, 2, 3, 255)), "héllo\nSteps: 1")
    back = Image.open(io.BytesIO(data))
    assert back.mode == "RGB" and back.size == (16, 8) and back.text["parameters"] == "héllo\nSteps: 1"
    assert png.encode(Image.new("RGB", (8, 8)), "日本").count(b"iTXt") == 1
    assert png.decode_init(data).size == (16, 8)
    for bad in (b"", b"not an image", data[:40]):
        with pytest.raises(BadRequest):
            png.decode_init(bad)
