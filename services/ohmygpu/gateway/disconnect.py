"""A request whose client goes away is cancelled, whatever it is waiting for.

Neither uvicorn nor Starlette cancels a handler when its client disconnects: uvicorn only marks
the connection, and a handler learns of it only if it calls `receive()`, which a non-streamed
answer never does. So a client that gave up (a timeout, Ctrl-C) kept its place in a model's
queue, and once served, the model generated a whole answer for nobody while the clients behind
it waited (ollama has had the same class of bug). Here every HTTP request runs in a task of its
own; once the handler has read its body, a watcher waits for the disconnect and, if it comes
before the response is complete, cancels the task: a queued request leaves the queue
(daemon/admission.py), a generation stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    """ASGI middleware: cancel the request's handler when its client disconnects mid-request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        complete = False
        gone = False

        async def app_receive() -> Message:
            if gone:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_read.set()  # from now on, the only message left to come is the disconnect
            return message

        async def app_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        async def watch() -> None:
            nonlocal gone
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            if not complete:  # uvicorn also says "disconnect" once the response is complete
                gone = True
                handler.cancel()

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait([handler], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server itself cancels us (shutdown): the handler too
            handler.cancel()
            raise
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if handler.cancelled() and gone:
            return  # nobody is left to answer
        handler.result()  # the handler's own outcome (an exception reaches the error handlers)
