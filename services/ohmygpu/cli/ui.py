"""`omg ui`: the web console's address (http://127.0.0.1:11434/ui/), opened in a browser.

The console is served by the daemon itself (gateway/console/); this command only names it. A
daemon listening on every interface (0.0.0.0, ::) is reached through loopback. The token is
never put in the URL (URLs end up in histories and logs): the page asks for it.
"""

from __future__ import annotations

import argparse
import webbrowser

from ohmygpu.core.netaddr import split_addr
from ohmygpu.core.settings import Settings

_ANY = {"", "0.0.0.0", "::", "[::]"}


def console_url(http_addr: str) -> str:
    """The console's URL on the daemon listening at `http_addr` (host:port)."""
    host, port = split_addr(http_addr)
    host = "127.0.0.1" if host in _ANY else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/ui/"


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    url = console_url(settings.http_addr)
    print(url)
    if not args.no_open:
        webbrowser.open(url)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    u = sub.add_parser("ui", help="open the web console in a browser (prints its URL)")
    u.add_argument("--no-open", action="store_true", help="only print the URL")
    u.set_defaults(func=cmd_ui)
