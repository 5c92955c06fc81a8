"""The web page's server: a small FastAPI app over :class:`~gpt4roi.chat.session.Session`.

Why FastAPI and a plain page rather than Gradio: drawing several numbered boxes on an image, moving, resizing
and deleting them is not something stock Gradio components do (GPT4RoI's own demo needed a forked Gradio
component that users could not install), while a canvas and ~400 lines of plain JavaScript do it with no
build step. FastAPI + uvicorn are small, well kept, and stream answers with server-sent events.

Each browser gets its own conversation, found by an HttpOnly cookie whose value the server issued and
signed: a cookie the server did not sign (made up, or from before a restart) gets a fresh session, so a client
cannot choose or guess another browser's key. There is no login, so every request must also name this
server: its ``Host`` (and ``Origin``, when the browser sends one) must be the address the connection reached,
a loopback name when that is loopback, or one of ``allowed_hosts``. That stops DNS rebinding, where a page of
another site re-points its own name at this machine and then talks to the chat as "same origin". One model
serves every conversation, one answer at a time (a shared torch model is not safe to call from several
threads). Uploads are limited in bytes before they are parsed and in pixels before they are decoded.

This module assembles the app: the host check, cookie and body-size middleware, the error handlers, the static
files and the routes (:mod:`.routes`); conversations live in :mod:`.conversations`, answers stream from
:mod:`.answers`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

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
from .session import ConversationLimits

COOKIE = "gpt4roi_chat"
MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing allowed on top of the file itself
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_PORTS = {"http": 80, "https": 443}


def host_allowed(host: str | None, port: int | None, server: tuple[str, int | None] | None,
                 allowed_hosts: frozenset[str]) -> bool:
    """Whether a request naming ``host:port`` is meant for the server whose socket ``server`` it reached."""
    if host is None:
        return False
    if host in allowed_hosts:
        return True
    own_host, own_port = server if server else ("127.0.0.1", None)
    own_host = own_host.strip("[]").lower()
    if own_port is not None and port != own_port:
        return False
    return host == own_host or (own_host in LOOPBACK and host in LOOPBACK)


def _split(netloc: str, scheme: str) -> tuple[str | None, int | None]:
    """(lower-case host without brackets, port with the scheme's default) of ``netloc``; (None, None) if bad."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        return parts.hostname, parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None, None


class _HostCheck:
    """ASGI middleware: refuse requests whose ``Host`` or ``Origin`` names another server (DNS rebinding, pages
    of other sites); see the module docstring."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str]):
        self.app = app
        self.allowed_hosts = allowed_hosts

    def _refusal(self, scope: Scope) -> str | None:
        headers = Request(scope).headers
        server = scope.get("server")
        host_header = headers.get("host", "")
        scheme = scope.get("scheme", "http")
        if not host_allowed(*_split(host_header, scheme), server, self.allowed_hosts):
            return (f"refused: the request names host {host_header!r}, which is not this server's address "
                    f"({_address(server)}); to reach the chat under another name, start it with "
                    "allowed_hosts=[<that name>]")
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin) if origin != "null" else None
            if parts is None or parts.scheme not in DEFAULT_PORTS or not host_allowed(
                    *_split(parts.netloc, parts.scheme), server, self.allowed_hosts):
                return f"refused: a request from another site ({origin}) cannot use this chat"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)):
            await error_response(403, refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _address(server: tuple[str, int | None] | None) -> str:
    if not server:
        return "unknown"
    host, port = server
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port is not None else host


class _CookieSession:
    """ASGI middleware: the session key is a random token signed with a secret made when the app starts;
    anything else in the cookie is replaced by a fresh key. The key is exposed as ``scope['chat_key']``."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.secret = secrets.token_bytes(32)

    def _signature(self, token: str) -> str:
        return hmac.new(self.secret, token.encode(), hashlib.sha256).hexdigest()[:32]

    def issued(self, value: str) -> bool:
        """Whether ``value`` is a key this server issued."""
        token, dot, signature = value.rpartition(".")
        return bool(dot and token) and hmac.compare_digest(signature, self._signature(token))

    def new_key(self) -> str:
        token = secrets.token_urlsafe(24)
        return f"{token}.{self._signature(token)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = Request(scope).cookies.get(COOKIE, "")
        fresh = not self.issued(key)
        if fresh:
            key = self.new_key()
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
               idle_minutes: float = 60.0, conversation: ConversationLimits | None = None,
               allowed_hosts: Iterable[str] = (), title: str = "GPT4RoI region chat",
               model_name: str = "") -> FastAPI:
    """The chat app answering with ``model``: ``limits`` bound uploads (bytes, pixels), ``conversation`` boxes
    and rounds; at most ``max_sessions`` conversations, each ending after ``idle_minutes`` unused;
    ``allowed_hosts`` are names (e.g. a reverse proxy's) accepted besides the server's own address."""
    limits = limits or ImageLimits()
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = SessionStore(model, max_sessions, idle_seconds=60.0 * idle_minutes, limits=conversation)
    app.state.chat = ChatContext(limits, model_name)
    app.add_middleware(_BodyLimit, limit=limits.max_bytes + MULTIPART_SLACK)
    app.add_middleware(_CookieSession)
    app.add_middleware(_HostCheck, allowed_hosts=frozenset(name.strip("[]").lower() for name in allowed_hosts))
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
