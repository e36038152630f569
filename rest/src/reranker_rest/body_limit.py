"""Refuse request bodies over Settings.max_body_bytes with 413 before they are buffered.

A declared Content-Length over the limit is refused without reading the body; a body of
unknown length (chunked) is read up to the limit and refused when it crosses it. The body is
then handed on whole (FastAPI buffers it anyway), so nothing here holds more than the limit.

Once the body is read, this layer is also the one that hears the client leave: uvicorn does
not cancel a handler whose client disconnected, so a caller that gave up would keep its Triton
requests (up to REST_MAX_DOCUMENTS documents' worth) running for nobody. The handler runs as a
task that is cancelled on `http.disconnect`; cancelling it cancels the client's in-flight gRPC
calls."""

from __future__ import annotations

import asyncio
import contextlib

from .errors import ApiError, response

# The status the metrics record for a request whose caller left (nginx's convention).
CLIENT_CLOSED = 499


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False
        gone = asyncio.Event()

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            await gone.wait()  # later calls wait for the disconnect, as the server's would
            return {"type": "http.disconnect"}

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        handler = asyncio.ensure_future(self.app(scope, replay, send))
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not handler.done() and gone.is_set():  # the caller left: stop its work
                scope.setdefault("state", {})["status"] = CLIENT_CLOSED
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
            else:
                await handler  # its answer (or what the app raised)
        finally:
            watcher.cancel()
            handler.cancel()

    async def _refuse(self, scope, receive, send):
        # Connection: close - the unread rest of the body must not be parsed as a next request.
        err = ApiError(
            413,
            f"request body: larger than the limit of {self.max_bytes} bytes (REST_MAX_BODY_BYTES)",
            "Validation",
            headers={"Connection": "close"},
        )
        await response(scope, err)(scope, receive, send)
