"""OpenAI's images API: POST /v1/images/generations (JSON) and /v1/images/edits (multipart, an
image to image generation), translated to the daemon's GenerateImageRequest.

OpenAI's own fields (model, prompt, n, size, response_format) plus the extensions image tools
expect of a local server: seed, steps, negative_prompt, cfg_scale, sampler, and strength for
edits. `dall-e-*` / `gpt-image-*` names (what clients send by default) mean the first installed
image model (the daemon's rule, admission.image_model). `response_format: url` gets a
`data:` URL, since a local daemon hosts no image URLs.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ohmygpu.core.errors import InvalidArgument
from ohmygpu.core.image_size import parse_size
from ohmygpu.gateway.body import read_json
from ohmygpu.gateway.context import Gateway
from ohmygpu.gateway.multipart import form_file, multipart_form
from ohmygpu.runtime.v1 import runtime_pb2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Magic numbers of the formats the runtime decodes: anything else is refused before a queue.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"RIFF", "webp"))


def image_kind(data: bytes) -> str:
    """'png', 'jpeg' or 'webp' from the first bytes; raises InvalidArgument for anything else."""
    for magic, kind in _MAGIC:
        if data.startswith(magic) and (kind != "webp" or data[8:12] == b"WEBP"):
            return kind
    raise InvalidArgument("the uploaded file is not a PNG, JPEG or WebP image", param="image")


def int_field(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"'{name}' must be an integer from {lo} to {hi}", param=name)
    return value


def float_field(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidArgument(f"'{name}' must be a number", param=name) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidArgument(f"'{name}' must be a number from {lo:g} to {hi:g}", param=name)
    return float(value)


def _str(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"'{name}' must be a string", param=name)
    return value


class ImageRoutes:
    """Handlers for OpenAI's image endpoints."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def routes(self) -> list[Route]:
        return [
            Route("/v1/images/generations", self.generations, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
        ]

    def _request(self, fields: dict[str, Any] | FormData) -> tuple[runtime_pb2.GenerateImageRequest, str]:
        get = fields.get
        prompt = _str(get("prompt"), "prompt")
        if not prompt.strip():
            raise InvalidArgument("'prompt' is required", param="prompt")
        fmt = _str(get("response_format"), "response_format") or "b64_json"
        if fmt not in ("b64_json", "url"):
            raise InvalidArgument("'response_format' must be b64_json or url", param="response_format")
        width, height = parse_size(get("size"))
        req = runtime_pb2.GenerateImageRequest(
            model=_str(get("model"), "model"), prompt=prompt,
            negative_prompt=_str(get("negative_prompt"), "negative_prompt"), width=width, height=height,
            sampler=_str(get("sampler"), "sampler"))
        if get("n") is not None:
            req.count = int_field(get("n"), "n", 1, self.gw.settings.image_max_count)
        if get("steps") is not None:
            req.steps = int_field(get("steps"), "steps", 1, self.gw.settings.image_max_steps)
        if get("seed") is not None:
            req.seed = int_field(get("seed"), "seed", 0, 2**63 - 1)
        if get("cfg_scale") is not None:
            req.cfg_scale = float_field(get("cfg_scale"), "cfg_scale", 0, 30)
        if get("strength") is not None:
            req.strength = float_field(get("strength"), "strength", 0, 1)
        return req, fmt

    async def generations(self, request: Request) -> Response:
        body = await read_json(request, self.gw.body_limit)
        req, fmt = self._request(body)
        return await self._answer(req, fmt)

    async def edits(self, request: Request) -> Response:
        limit = (self.gw.settings.max_image_mb << 20) + (1 << 20)
        async with multipart_form(request, limit, field="image", setting="OMG_MAX_IMAGE_MB") as form:
            upload = form_file(form, "image" if form.get("image") is not None else "image[]")
            data = await upload.read()
            # OpenAI's mask: a PNG whose fully transparent pixels mark the area to repaint.
            has_mask = form.get("mask") is not None
            mask = await form_file(form, "mask").read() if has_mask else b""
            req, fmt = self._request(form)
        if not data:
            raise InvalidArgument("the image file is empty", param="image")
        image_kind(data)
        req.init_image = data
        if has_mask:
            if not mask.startswith(b"\x89PNG"):
                raise InvalidArgument("the mask must be a PNG whose fully transparent pixels mark the area to edit",
                                      param="mask")
            req.mask_image, req.mask_mode = mask, runtime_pb2.MASK_MODE_TRANSPARENT
        return await self._answer(req, fmt)

    async def _answer(self, req: runtime_pb2.GenerateImageRequest, fmt: str) -> Response:
        images = await collect_images(self.gw.api.generate_image(req))
        data = []
        for image in images:
            b64 = base64.b64encode(image.png).decode("ascii")
            item: dict[str, Any] = {"revised_prompt": req.prompt}
            if fmt == "url":
                item["url"] = "data:image/png;base64," + b64
            else:
                item["b64_json"] = b64
            data.append(item)
        return JSONResponse({"created": int(time.time()), "data": data,
                             "output_format": "png", "size": _size_of(images)})


async def collect_images(stream: AsyncIterator[runtime_pb2.GenerateImageResponse],
                         on_progress: Callable[[runtime_pb2.ImageProgress], None] | None = None,
                         ) -> list[runtime_pb2.GeneratedImage]:
    """A generation's images in request order, passing its progress to `on_progress`."""
    images: list[runtime_pb2.GeneratedImage] = []
    async for message in stream:
        if message.HasField("image"):
            images.append(message.image)
        elif on_progress is not None and message.HasField("progress"):
            on_progress(message.progress)
    return sorted(images, key=lambda i: i.index)


def _size_of(images: list[runtime_pb2.GeneratedImage]) -> str:
    return f"{images[0].width}x{images[0].height}" if images else ""
