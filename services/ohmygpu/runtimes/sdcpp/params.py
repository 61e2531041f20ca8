"""GenerateImageRequest -> what stable-diffusion.cpp is asked to do, checked before any work.

Kept apart from the worker (and from the library) so every bound and default is one readable
table, and so a bad request is refused with INVALID_ARGUMENT before the model thread is taken.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from ohmygpu.runtime.v1 import runtime_pb2

MIN_SIDE, MAX_SIDE = 64, 2048
NATIVE_SIDE = 512  # SD 1.x; the only family this slice loads by default size
DEFAULT_STEPS, MAX_STEPS = 20, 500
MAX_MASK_BLUR = 64  # pixels: a wider blur repaints far outside the mask
DEFAULT_CFG, MAX_CFG = 7.0, 100.0
DEFAULT_STRENGTH = 0.75
MAX_COUNT = 16
SEED_SPACE = 2**32  # a random seed fits the 32 bits Automatic1111 and ComfyUI show

# Our request name -> Automatic1111's label (written into the PNG). The names are
# stable-diffusion-cpp-python's SAMPLE_METHOD_MAP keys, so they pass to the library unchanged.
SAMPLERS: dict[str, str] = {
    "euler_a": "Euler a",
    "euler": "Euler",
    "heun": "Heun",
    "dpm2": "DPM2",
    "dpm++2s_a": "DPM++ 2S a",
    "dpm++2m": "DPM++ 2M",
    "dpm++2mv2": "DPM++ 2M v2",
    "ipndm": "IPNDM",
    "ipndm_v": "IPNDM_V",
    "lcm": "LCM",
    "ddim_trailing": "DDIM",
    "tcd": "TCD",
    "res_multistep": "Res Multistep",
    "res_2s": "Res 2s",
    "er_sde": "ER SDE",
}
_BY_LABEL = {label.lower(): name for name, label in SAMPLERS.items()}


class BadRequest(ValueError):
    """A request this runtime refuses (INVALID_ARGUMENT); the message says what to change."""


@dataclass(frozen=True)
class Plan:
    """One request, resolved: every default filled in, every bound checked."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg_scale: float
    sampler: str  # a SAMPLERS key
    seed: int  # image i uses seed + i
    count: int
    strength: float  # used only with an init image
    has_init_image: bool
    mask_blur: int | None = None  # inpainting: the mask's blur radius; None: no mask

    def seed_of(self, index: int) -> int:
        return self.seed + index

    def parameters(self, index: int, model: str) -> str:
        """Automatic1111's "parameters" text for image `index`, which A1111, ComfyUI and
        civitai read back ("Denoising strength" only for image to image, as A1111 writes it)."""
        fields = [f"Steps: {self.steps}", f"Sampler: {SAMPLERS[self.sampler]}",
                  f"CFG scale: {self.cfg_scale:g}", f"Seed: {self.seed_of(index)}",
                  f"Size: {self.width}x{self.height}", f"Model: {model}"]
        if self.has_init_image:
            fields.append(f"Denoising strength: {self.strength:g}")
        if self.mask_blur is not None:
            fields.append(f"Mask blur: {self.mask_blur}")
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(", ".join(fields))
        return "\n".join(lines)


def sampler_name(requested: str, default: str) -> str:
    """A SAMPLERS key from a request's name or an A1111 label ("Euler a"); empty: `default`."""
    if not requested:
        return default
    key = requested.strip().lower()
    if key in SAMPLERS:
        return key
    if key in _BY_LABEL:
        return _BY_LABEL[key]
    raise BadRequest(f"unknown sampler '{requested}'; known: {', '.join(SAMPLERS)}")


def side(value: int, what: str, fallback: int) -> int:
    if value == 0:
        return fallback
    if value % 8 or not MIN_SIDE <= value <= MAX_SIDE:
        raise BadRequest(f"{what} must be a multiple of 8 from {MIN_SIDE} to {MAX_SIDE} (got {value})")
    return value


def fit_side(pixels: int) -> int:
    """An init image's side as a default size: down to a multiple of 8, within the bounds."""
    return max(MIN_SIDE, min(MAX_SIDE, pixels // 8 * 8))


def plan(request: runtime_pb2.GenerateImageRequest, *, default_sampler: str,
         init_size: tuple[int, int] | None = None) -> Plan:
    """Resolve `request`; `init_size` is the decoded init image's (width, height), if any."""
    width = side(request.width, "width", fit_side(init_size[0]) if init_size else NATIVE_SIDE)
    height = side(request.height, "height", fit_side(init_size[1]) if init_size else NATIVE_SIDE)
    steps = request.steps or DEFAULT_STEPS
    if steps > MAX_STEPS:
        raise BadRequest(f"steps must be from 1 to {MAX_STEPS} (got {steps}); 0 means {DEFAULT_STEPS}")
    cfg = request.cfg_scale if request.HasField("cfg_scale") else DEFAULT_CFG
    if not (math.isfinite(cfg) and 0 <= cfg <= MAX_CFG):
        raise BadRequest(f"cfg_scale must be from 0 to {MAX_CFG:g} (got {cfg:g})")
    strength = request.strength if request.HasField("strength") else DEFAULT_STRENGTH
    if not (math.isfinite(strength) and 0 <= strength <= 1):
        raise BadRequest(f"strength must be from 0 to 1 (got {strength:g})")
    if request.mask_blur > MAX_MASK_BLUR:
        raise BadRequest(f"mask_blur must be from 0 to {MAX_MASK_BLUR} pixels (got {request.mask_blur})")
    count = request.count or 1
    if count > MAX_COUNT:
        raise BadRequest(f"count must be from 1 to {MAX_COUNT} (got {count})")
    # Negative: random, as Automatic1111's -1. The seed actually used is reported per image.
    seed = request.seed if request.HasField("seed") and request.seed >= 0 else secrets.randbelow(SEED_SPACE)
    if seed + count - 1 >= 2**63:
        raise BadRequest(f"seed {seed} + {count} images leaves the 64-bit range")
    return Plan(prompt=request.prompt, negative_prompt=request.negative_prompt, width=width,
                height=height, steps=steps, cfg_scale=float(cfg),
                sampler=sampler_name(request.sampler, default_sampler), seed=seed, count=count,
                strength=float(strength), has_init_image=init_size is not None,
                mask_blur=request.mask_blur if request.mask_image else None)
