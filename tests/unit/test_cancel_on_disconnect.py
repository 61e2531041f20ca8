"""A request whose client goes away is cancelled wherever it waits (gateway/disconnect.py): the
handler's `finally` runs at once, as the queue and the generation behind it need; a request that
completes is never cancelled, and a handler's own error still reaches the server."""

from __future__ import annotations

import asyncio

import pytest
from ohmygpu.gateway.disconnect import CancelOnDisconnect


class Connection:
    """What uvicorn's receive() does: the body once, then nothing until the client goes away
    (or the response is complete), then "http.disconnect"."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.body_sent = False
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if not self.body_sent:
            self.body_sent = True
            return {"type": "http.request", "body": b'{"prompt": "hi"}', "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.gone.set()  # uvicorn's receive answers "disconnect" once the response is complete


def test_a_client_gone_while_its_request_waits_cancels_it() -> None:
    events: list[str] = []

    async def app(scope, receive, send) -> None:
        await receive()  # the handler reads its body, then waits (for a queue slot, a token)
        try:
            await asyncio.sleep(3600)
        finally:
            events.append("left the queue")

    async def main() -> None:
        conn = Connection()
        served = asyncio.ensure_future(CancelOnDisconnect(app)({"type": "http"}, conn.receive, conn.send))
        await asyncio.sleep(0.05)
        assert not served.done()
        conn.gone.set()  # the client times out
        await asyncio.wait_for(served, 2)
        assert events == ["left the queue"] and conn.sent == []

    asyncio.run(main())


def test_a_request_that_completes_is_not_cancelled() -> None:
    events: list[str] = []

    async def app(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})
        await asyncio.sleep(0.05)  # work after the answer (a background task) runs to its end
        events.append("finished")

    async def main() -> None:
        conn = Connection()
        await asyncio.wait_for(CancelOnDisconnect(app)({"type": "http"}, conn.receive, conn.send), 2)
        assert events == ["finished"] and conn.sent[-1]["body"] == b"ok"

    asyncio.run(main())


def test_a_handlers_own_error_still_reaches_the_server() -> None:
    async def app(scope, receive, send) -> None:
        await receive()
        raise RuntimeError("a bug")

    async def main() -> None:
        conn = Connection()
        with pytest.raises(RuntimeError, match="a bug"):
            await CancelOnDisconnect(app)({"type": "http"}, conn.receive, conn.send)

    asyncio.run(main())
