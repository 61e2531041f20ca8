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


def decode_init(data: bytes) -> Any:
    """The init image as a PIL RGB image; BadRequest (no path, no Pillow internals) if `data`
    is not a PNG, JPEG or WebP Pillow can read, or decodes to more than MAX_INIT_PIXELS."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=("PNG", "JPEG", "WEBP"))
            if image.width * image.height > MAX_INIT_PIXELS:
                raise BadRequest(f"init_image is {image.width}x{image.height}; at most "
                                 f"{MAX_INIT_PIXELS} pixels are accepted")
            image.load()  # decode now: a truncated file fails here, not inside the library
    except BadRequest:
        raise
    except Exception:  # noqa: BLE001 - Pillow raises many types for undecodable input
        raise BadRequest("init_image is not a readable PNG, JPEG or WebP image") from None
    return image.convert("RGB")
