"""Images in and out of the sdcpp worker: PNG with Automatic1111's "parameters" text chunk, and
the init image of image to image, decoded (and refused when it is not an image) by Pillow."""

from __future__ import annotations

import io
import warnings
from typing import Any

from ohmygpu.runtimes.sdcpp.params import BadRequest

MAX_INIT_PIXELS = 4096 * 4096  # decoded size bound: an upload must not become gigabytes


def encode(image: Any, parameters: str) -> bytes:
    """`image` (a PIL image) as RGB PNG, carrying `parameters` in a tEXt chunk named
    "parameters" (Latin-1 only; iTXt, UTF-8, for prompts outside it, as A1111 writes them)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    try:
        parameters.encode("latin-1")
        info.add_text("parameters", parameters)
    except UnicodeEncodeError:
        info.add_itxt("parameters", parameters)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _open(data: bytes, what: str) -> Any:
    """`data` decoded by Pillow; BadRequest (no path, no Pillow internals) if it is not a PNG,
    JPEG or WebP Pillow can read, or decodes to more than MAX_INIT_PIXELS."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "WEBP"))
            if image.width * image.height > MAX_INIT_PIXELS:
                raise BadRequest(f"{what} is {image.width}x{image.height}; at most "
                                 f"{MAX_INIT_PIXELS} pixels are accepted")
            image.load()  # decode now: a truncated file fails here, not inside the library
    except BadRequest:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many types for undecodable input
        raise BadRequest(f"{what} is not a readable PNG, JPEG or WebP image") from None
    return image


def decode_init(data: bytes) -> Any:
    """The init image as a PIL RGB image (BadRequest for anything but a bounded PNG, JPEG or WebP)."""
    return _open(data, "init_image").convert("RGB")


def decode_mask(data: bytes, mode: int, size: tuple[int, int], blur: int) -> Any:
    """An inpainting mask as stable-diffusion.cpp reads it: one channel, white where the image is
    repainted, at the init image's `size`. `mode` (runtime_pb2.MaskMode) says how `data` marks that
    area: light pixels, dark ones, or (OpenAI's images.edit) fully transparent ones. `blur` softens
    the edge so the repainted area blends in, as Automatic1111's mask_blur does."""
    from PIL import Image, ImageFilter, ImageOps

    from ohmygpu.runtime.v1 import runtime_pb2

    image = _open(data, "mask_image")
    if mode == runtime_pb2.MASK_MODE_TRANSPARENT:
        if "A" not in image.getbands() and not (image.mode == "P" and "transparency" in image.info):
            raise BadRequest("the mask has no alpha channel: its fully transparent pixels mark the "
                             "area to edit (OpenAI's convention), so it must be a PNG with transparency")
        alpha = image.convert("RGBA").getchannel("A")
        mask = alpha.point(lambda a: 255 if a == 0 else 0)
    else:
        mask = image.convert("L")
        if mode == runtime_pb2.MASK_MODE_INVERTED:
            mask = ImageOps.invert(mask)
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return mask
