"""The web console: a single page (plain ES modules and CSS, no build step) served at /ui/.

The files sit beside this module and ship in the wheel as package data; nothing is fetched from
elsewhere at run time, so the console works offline. Only the files found here when the app is
built are served, by exact path (no path from a request ever reaches the file system), each with a
strict Content-Security-Policy: scripts, styles, images and connections from this origin only,
no inline script, no framing. The page then calls the daemon's own HTTP API, under the same Host,
Origin, CORS and token rules as any client: the files themselves need no token (the page asks
for one when the API answers 401), so `CONSOLE_PATHS` joins the probes among the paths the
security middleware opens.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

PREFIX = "/ui"
_DIR = Path(__file__).resolve().parent
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Self only. blob: for the recorded audio and generated images shown in the page; data: for
# the small inline icons of the stylesheet. connect-src 'self' covers fetch and EventSource;
# the WebSocket of /v1/events is same-origin too.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), geolocation=(), microphone=(self)",
    "Cache-Control": "no-cache",
}


def asset_files() -> dict[str, Path]:
    """URL path -> file, for every asset shipped beside this module."""
    files = {f"{PREFIX}/{p.relative_to(_DIR).as_posix()}": p for p in sorted(_DIR.rglob("*"))
             if p.is_file() and p.suffix in _TYPES}
    if (_DIR / "index.html").is_file():
        files[f"{PREFIX}/"] = _DIR / "index.html"
    return files


def _route(path: str, file: Path) -> Route:
    body, media_type = file.read_bytes(), _TYPES[file.suffix]

    async def serve(request: Request) -> Response:
        return Response(body if request.method == "GET" else b"", media_type=media_type,
                        headers={**HEADERS, "Content-Length": str(len(body))})

    return Route(path, serve, methods=["GET", "HEAD"], name=f"console:{path}")


async def _redirect(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308)


def console_routes() -> list[BaseRoute]:
    """/ui (a redirect), /ui/ (index.html) and one route per asset."""
    return [Route(PREFIX, _redirect, methods=["GET", "HEAD"]),
            *(_route(path, file) for path, file in asset_files().items())]


CONSOLE_PATHS = frozenset({PREFIX, *asset_files()})
