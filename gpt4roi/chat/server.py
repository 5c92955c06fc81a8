"""The web page's server: a small FastAPI app over :class:`~gpt4roi.chat.session.Session`.

Why FastAPI and a plain page rather than Gradio: drawing several numbered boxes on an image, moving, resizing
and deleting them is not something stock Gradio components do (GPT4RoI's own demo needed a forked Gradio
component that users could not install), while a canvas and ~400 lines of plain JavaScript do it with no
build step. FastAPI + uvicorn are small, well kept, and stream answers with server-sent events.

Each browser gets its own conversation, found by an HttpOnly cookie. One model serves every conversation,
one answer at a time (a shared torch model is not safe to call from several threads). Uploads are limited
in bytes before they are parsed and in pixels before they are decoded.

This module assembles the app: the cookie and body-size middleware, the error handlers, the static files and
the routes (:mod:`.routes`); conversations live in :mod:`.conversations`, answers stream from :mod:`.answers`.
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .conversations import SessionStore
from .errors import RequestTooLarge, error_response
from .images import ImageLimits
from .models import ChatModel
from .routes import STATIC, ChatContext, router

COOKIE = "gpt4roi_chat"
MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing allowed on top of the file itself
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class _CookieSession:
    """ASGI middleware: give every browser a random session cookie and expose it as ``scope['chat_key']``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = Request(scope).cookies.get(COOKIE, "")
        fresh = not (20 <= len(key) <= 64 and key.replace("-", "").replace("_", "").isalnum())
        if fresh:
            key = secrets.token_urlsafe(24)
        scope["chat_key"] = key

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(
                    "set-cookie", f"{COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes, declared or actually sent."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Request(scope).headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await error_response(413, str(RequestTooLarge(self.limit)))(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise RequestTooLarge(self.limit)
            return message

        await self.app(scope, limited, send)


async def _too_large(request: Request, exc: RequestTooLarge) -> JSONResponse:
    return error_response(413, str(exc))


async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return error_response(400, f"malformed request: {problems}")


def create_app(model: ChatModel, *, limits: ImageLimits | None = None, max_sessions: int = 64,
               title: str = "GPT4RoI region chat", model_name: str = "") -> FastAPI:
    """The chat app answering with ``model``; ``limits`` bound uploads (bytes, pixels)."""
    limits = limits or ImageLimits()
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = SessionStore(model, max_sessions)
    app.state.chat = ChatContext(limits, model_name)
    app.add_middleware(_BodyLimit, limit=limits.max_bytes + MULTIPART_SLACK)
    app.add_middleware(_CookieSession)
    app.add_exception_handler(RequestTooLarge, _too_large)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
    return app


def serve(app: FastAPI, host: str, port: int, *, announce: str = "") -> None:
    """Run ``app`` with uvicorn on ``host:port`` and print the address (a warning when not loopback)."""
    import uvicorn

    print(f"GPT4RoI region chat: http://{'[' + host + ']' if ':' in host else host}:{port}/ {announce}".rstrip())
    if host not in LOOPBACK:
        print(f"warning: serving on {host}, reachable from other machines; the chat has no login")
    uvicorn.run(app, host=host, port=port, log_level="warning")
