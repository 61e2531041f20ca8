"""The Automatic1111 API subset that image front-ends speak (Open WebUI's "Automatic1111" engine,
sdwebuiapi, ...): txt2img, img2img, the model list, the current-model option, samplers and the
progress of the running job, translated to the daemon's GenerateImageRequest.

A1111's fields: prompt, negative_prompt, steps, cfg_scale, width, height, seed (-1: random),
sampler_name, batch_size x n_iter images, denoising_strength and init_images (base64) for
img2img, mask (base64; white repaints), inpainting_mask_invert and mask_blur for inpainting,
override_settings.sd_model_checkpoint to pick the model. The checkpoint picked with
POST /sdapi/v1/options is this daemon's A1111 default until it restarts (then: the first image
model); errors use A1111's FastAPI shape {"detail": ...} with the HTTP status of the cause.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument, ModelNotFound
from ohmygpu.gateway.body import read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.images import collect_images, float_field, image_kind, int_field
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

A1111_MASK_BLUR = 4  # A1111's default mask_blur

# A1111's sampler names -> stable-diffusion.cpp's (what the runtime takes).
SAMPLERS = {"Euler a": "euler_a", "Euler": "euler", "Heun": "heun", "DPM2": "dpm2",
            "DPM++ 2S a": "dpm++2s_a", "DPM++ 2M": "dpm++2m", "LCM": "lcm", "DDIM": "ddim_trailing"}


@dataclass
class Board:
    """What the job running now has done, for GET /sdapi/v1/progress."""

    running: int = 0
    step: int = 0
    steps: int = 0
    image: int = 0
    images: int = 0
    started: float = 0.0
    model: str = ""
    jobs: list[str] = field(default_factory=list)


def _b64_image(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"'{name}' must be a base64 image", param=name)
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"'{name}' is not valid base64", param=name) from None
    image_kind(data)
    return data


class A1111Routes:
    """Handlers for /sdapi/v1/*."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.checkpoint = ""  # set by POST /sdapi/v1/options
        self.board = Board()

    def routes(self) -> list[Route]:
        return [
            Route("/sdapi/v1/txt2img", self.txt2img, methods=["POST"]),
            Route("/sdapi/v1/img2img", self.img2img, methods=["POST"]),
            Route("/sdapi/v1/sd-models", self.sd_models, methods=["GET"]),
            Route("/sdapi/v1/options", self.get_options, methods=["GET"]),
            Route("/sdapi/v1/options", self.set_options, methods=["POST"]),
            Route("/sdapi/v1/samplers", self.samplers, methods=["GET"]),
            Route("/sdapi/v1/progress", self.progress, methods=["GET"]),
        ]

    async def _image_models(self) -> list[assets_pb2.InstallRecord]:
        records = await self.gw.api.list_records()
        return sorted((r for r in records if r.kind == assets_pb2.MODEL_KIND_IMAGE), key=lambda r: r.name)

    async def _current(self) -> str:
        models = await self._image_models()
        names = [m.name for m in models]
        if self.checkpoint in names:
            return self.checkpoint
        if not names:
            raise InvalidArgument("no image model is installed: add one with `omg model add` or `omg pull`")
        return names[0]

    async def sd_models(self, request: Request) -> Response:
        out = []
        for m in await self._image_models():
            digest = m.artifacts[0].sha256.removeprefix("sha256:") if m.artifacts else ""
            out.append({"title": m.name, "model_name": m.name, "hash": digest[:10], "sha256": digest,
                        "filename": m.artifacts[0].filename if m.artifacts else "", "config": None})
        return JSONResponse(out)

    async def get_options(self, request: Request) -> Response:
        try:
            current = await self._current()
        except InvalidArgument:
            current = ""
        return JSONResponse({"sd_model_checkpoint": current, "samples_format": "png"})

    async def set_options(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        name = body.get("sd_model_checkpoint")
        if name is not None:
            if not isinstance(name, str):
                raise InvalidArgument("'sd_model_checkpoint' must be a model name", param="sd_model_checkpoint")
            if name not in {m.name for m in await self._image_models()}:
                raise ModelNotFound(name)
            self.checkpoint = name
        return JSONResponse(None)

    async def samplers(self, request: Request) -> Response:
        return JSONResponse([{"name": name, "aliases": [ours], "options": {}} for name, ours in SAMPLERS.items()])

    async def progress(self, request: Request) -> Response:
        b = self.board
        done = 0.0
        if b.running and b.steps and b.images:
            done = (b.image + b.step / b.steps) / b.images
        elapsed = time.monotonic() - b.started if b.running else 0.0
        eta = elapsed / done - elapsed if done > 0 else 0.0
        return JSONResponse({
            "progress": round(done, 4), "eta_relative": round(eta, 2),
            "state": {"skipped": False, "interrupted": False, "job": b.model if b.running else "",
                      "job_count": b.running, "job_no": b.image, "sampling_step": b.step,
                      "sampling_steps": b.steps},
            "current_image": None, "textinfo": None})

    def _request(self, body: dict[str, Any]) -> runtime_pb2.GenerateImageRequest:
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgument("'prompt' is required", param="prompt")
        override = body.get("override_settings") or {}
        model = override.get("sd_model_checkpoint") if isinstance(override, dict) else None
        # No checkpoint named: the one POST /options picked, else the daemon's default image model.
        req = runtime_pb2.GenerateImageRequest(model=model if isinstance(model, str) and model else self.checkpoint,
                                               prompt=prompt)
        negative = body.get("negative_prompt", "")
        if not isinstance(negative, str):
            raise InvalidArgument("'negative_prompt' must be a string", param="negative_prompt")
        req.negative_prompt = negative
        settings = self.gw.settings
        if body.get("width") is not None:
            req.width = int_field(body.get("width"), "width", 64, settings.image_max_size)
        if body.get("height") is not None:
            req.height = int_field(body.get("height"), "height", 64, settings.image_max_size)
        if body.get("steps") is not None:
            req.steps = int_field(body.get("steps"), "steps", 1, settings.image_max_steps)
        if body.get("cfg_scale") is not None:
            req.cfg_scale = float_field(body.get("cfg_scale"), "cfg_scale", 0, 30)
        seed = body.get("seed", -1)
        if seed is not None and seed != -1:
            req.seed = int_field(body.get("seed"), "seed", 0, 2**63 - 1)
        sampler = body.get("sampler_name") or body.get("sampler_index")
        if sampler:
            if sampler not in SAMPLERS:
                raise InvalidArgument(f"unknown sampler {str(sampler)[:40]!r}; known: {', '.join(SAMPLERS)}",
                                      param="sampler_name")
            req.sampler = SAMPLERS[sampler]
        batch = int_field(body.get("batch_size"), "batch_size", 1, settings.image_max_count) if body.get("batch_size") else 1
        iters = int_field(body.get("n_iter"), "n_iter", 1, settings.image_max_count) if body.get("n_iter") else 1
        req.count = batch * iters
        return req

    async def txt2img(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        return await self._answer(body, self._request(body))

    async def img2img(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        req = self._request(body)
        images = body.get("init_images")
        if not isinstance(images, list) or not images:
            raise InvalidArgument("'init_images' must hold one base64 image", param="init_images")
        req.init_image = _b64_image(images[0], "init_images")
        if body.get("denoising_strength") is not None:
            req.strength = float_field(body.get("denoising_strength"), "denoising_strength", 0, 1)
        if body.get("mask") is not None:  # inpainting: white repaints unless inverted, as in A1111
            req.mask_image = _b64_image(body["mask"], "mask")
            invert = body.get("inpainting_mask_invert", 0)
            if invert not in (0, 1, False, True):
                raise InvalidArgument("'inpainting_mask_invert' must be 0 or 1", param="inpainting_mask_invert")
            req.mask_mode = runtime_pb2.MASK_MODE_INVERTED if invert else runtime_pb2.MASK_MODE_UNSPECIFIED
            blur = body.get("mask_blur")
            req.mask_blur = A1111_MASK_BLUR if blur is None else int_field(blur, "mask_blur", 0, 64)
        return await self._answer(body, req)

    async def _answer(self, body: dict[str, Any], req: runtime_pb2.GenerateImageRequest) -> Response:
        b = self.board
        b.running += 1
        b.started, b.model, b.step, b.steps, b.image, b.images = time.monotonic(), req.model, 0, req.steps, 0, req.count

        def on_progress(p: runtime_pb2.ImageProgress) -> None:
            b.step, b.steps, b.image, b.images = p.step, p.steps, p.image, p.images

        try:
            images = await collect_images(self.gw.api.generate_image(req), on_progress)
        finally:
            b.running -= 1
        info = {"prompt": req.prompt, "negative_prompt": req.negative_prompt,
                "seed": images[0].seed if images else -1, "all_seeds": [i.seed for i in images],
                "width": images[0].width if images else req.width, "height": images[0].height if images else req.height,
                "sd_model_name": req.model, "infotexts": [i.parameters for i in images]}
        params = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return JSONResponse({"images": [base64.b64encode(i.png).decode("ascii") for i in images],
                             "parameters": params, "info": json.dumps(info)})
