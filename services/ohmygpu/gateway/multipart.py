"""multipart/form-data uploads with a size limit that holds while the body streams in (a
declared Content-Length over the limit is refused before a byte is read)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import BinaryIO

from ohmygpu.core.errors import InvalidArgument, PayloadTooLarge
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

_CHUNK = 1 << 20


@contextlib.asynccontextmanager
async def multipart_form(request: Request, limit: int, *, field: str = "file",
                         setting: str = "OMG_MAX_AUDIO_MB") -> AsyncIterator[FormData]:
    """The request's form; raises InvalidArgument for a body that is not multipart (naming the
    file `field` it must carry), or PayloadTooLarge past `limit` bytes (naming `setting`).
    Spooled files are closed when the block ends."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidArgument(f"expected a multipart/form-data body with the file in '{field}'", param=field)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {declared} bytes is over the {limit} byte limit ({setting})")

    async def limited() -> AsyncIterator[bytes]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"upload is over the {limit} byte limit ({setting})")
            yield chunk

    parser = MultiPartParser(request.headers, limited(), max_files=4, max_fields=64)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise InvalidArgument(f"malformed multipart body: {e.message}") from None
    try:
        yield form
    finally:
        await form.close()


def form_file(form: FormData, key: str) -> UploadFile:
    """The uploaded file under `key`; raises InvalidArgument naming the field."""
    value = form.get(key)
    if not isinstance(value, UploadFile):
        raise InvalidArgument(f"'{key}' is required and must be a file upload", param=key)
    return value


async def copy_upload(upload: UploadFile, out: BinaryIO) -> int:
    """Copy an upload into `out`; returns the bytes written."""
    total = 0
    while chunk := await upload.read(_CHUNK):
        out.write(chunk)
        total += len(chunk)
    out.flush()
    return total
