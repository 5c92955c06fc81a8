"""The web page's server: a small FastAPI app over :class:`~gpt4roi.chat.session.Session`.

Why FastAPI and a plain page rather than Gradio: drawing several numbered boxes on an image, moving, resizing
and deleting them is not something stock Gradio components do (GPT4RoI's own demo needed a forked Gradio
component that users could not install), while a canvas and ~400 lines of plain JavaScript do it with no
build step. FastAPI + uvicorn are small, well kept, and stream answers with server-sent events.

Each browser gets its own conversation, found by an HttpOnly cookie. One model serves every conversation,
one answer at a time (a shared torch model is not safe to call from several threads). Uploads are limited
in bytes before they are parsed and in pixels before they are decoded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .examples import example_image, example_names
from .images import ImageLimits, ImageRejected, decode_image
from .models import ChatModel
from .session import ChatError, ModelError, Session

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "gpt4roi_chat"
MULTIPART_SLACK = 64 * 1024  # bytes of multipart framing allowed on top of the file itself
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ChatRequest(BaseModel):
    message: str
    boxes: list[list[float]] = Field(default_factory=list)


class ExampleRequest(BaseModel):
    name: str


class RequestTooLarge(Exception):
    """The request body grew past the limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"the upload is larger than the limit of {limit} bytes")


@dataclass
class _Conversation:
    session: Session
    busy: bool = False
    image_version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Answer:
    """An answer being written by a worker thread: its chunks and a flag to stop it."""

    queue: asyncio.Queue[tuple[str, Any]]
    stop: threading.Event


class SessionStore:
    """Conversations by cookie value, the least recently used dropped beyond ``max_sessions``."""

    def __init__(self, model: ChatModel, max_sessions: int):
        self.model = model
        self.max_sessions = max_sessions
        self._items: OrderedDict[str, _Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> _Conversation:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            conversation = _Conversation(Session(self.model, session_id=secrets.token_hex(6)))
            self._items[key] = conversation
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)
            return conversation

    def __len__(self) -> int:
        return len(self._items)


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
            await _error(413, str(RequestTooLarge(self.limit)))(scope, receive, send)
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def create_app(model: ChatModel, *, limits: ImageLimits | None = None, max_sessions: int = 64,
               title: str = "GPT4RoI region chat", model_name: str = "") -> FastAPI:
    """The chat app answering with ``model``; ``limits`` bound uploads (bytes, pixels)."""
    limits = limits or ImageLimits()
    store = SessionStore(model, max_sessions)
    model_lock = threading.Lock()
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.add_middleware(_BodyLimit, limit=limits.max_bytes + MULTIPART_SLACK)
    app.add_middleware(_CookieSession)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestTooLarge)
    async def _too_large(request: Request, exc: RequestTooLarge) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"malformed request: {problems}")

    def conversation(request: Request) -> _Conversation:
        return store.get(request.scope["chat_key"])

    def state(item: _Conversation) -> dict[str, Any]:
        session = item.session
        has_image = session.image is not None
        return {
            "has_image": has_image,
            "width": session.size[0] if has_image else 0,
            "height": session.size[1] if has_image else 0,
            "image_url": f"/api/image?v={item.image_version}" if has_image else "",
            "boxes": [box.as_dict()["xyxy"] for box in session.boxes],
            "committed": session.committed,
            "history": [{"question": q, "answer": a} for q, a in session.history],
            "model": model_name,
        }

    def not_busy(item: _Conversation) -> JSONResponse | None:
        if item.busy:
            return _error(409, "the previous answer is still being written; wait for it to finish")
        return None

    def use_image(item: _Conversation, image, name: str) -> dict[str, Any]:
        item.session.set_image(image, name)
        item.image_version += 1
        return state(item)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/state")
    async def get_state(request: Request) -> dict[str, Any]:
        return state(conversation(request))

    @app.get("/api/examples")
    async def examples() -> dict[str, Any]:
        return {"examples": example_names(), "limits": {"max_bytes": limits.max_bytes,
                                                        "max_side": limits.max_side}}

    @app.post("/api/example")
    async def pick_example(body: ExampleRequest, request: Request) -> Response:
        item = conversation(request)
        if refusal := not_busy(item):
            return refusal
        try:
            image = example_image(body.name)
        except KeyError as exc:
            return _error(404, exc.args[0])
        return JSONResponse(use_image(item, image, f"{body.name}.png"))

    @app.post("/api/image")
    async def upload(request: Request) -> Response:
        item = conversation(request)
        if refusal := not_busy(item):
            return refusal
        try:
            form = await request.form(max_files=1, max_fields=4)
        except RequestTooLarge:
            raise
        except Exception as exc:  # python-multipart's parse errors
            return _error(400, f"the upload could not be read as a form: {exc}")
        upload_file = form.get("file")
        if upload_file is None or isinstance(upload_file, str):
            return _error(400, "the form has no file field named 'file'")
        name = Path(upload_file.filename or "upload").name
        data = await upload_file.read(limits.max_bytes + 1)
        try:
            image = decode_image(data, limits, name)
        except ImageRejected as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(use_image(item, image, name))

    @app.get("/api/image")
    async def image(request: Request) -> Response:
        session = conversation(request).session
        if session.image is None:
            return _error(404, "no image yet")
        return Response(session.image_png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/clear")
    async def clear(request: Request) -> Response:
        item = conversation(request)
        if refusal := not_busy(item):
            return refusal
        item.session.clear()
        return JSONResponse(state(item))

    @app.post("/api/chat")
    async def chat(body: ChatRequest, request: Request) -> Response:
        item = conversation(request)
        with item.lock:
            if refusal := not_busy(item):
                return refusal
            try:
                item.session.set_boxes(body.boxes)
                answer = item.session.stream(body.message)
            except ChatError as exc:
                return _error(400, str(exc))
            item.busy = True
        return StreamingResponse(_events(item, _start(item, answer)), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def _start(item: _Conversation, answer: Iterator[str]) -> _Answer:
        """Run the model in a worker thread now; its chunks arrive on the returned queue.

        The worker, not the response, clears ``busy``, so a page that goes away before reading cannot leave
        its conversation locked.
        """
        loop = asyncio.get_running_loop()
        running = _Answer(asyncio.Queue(), threading.Event())

        def put(kind: str, data: Any) -> None:
            loop.call_soon_threadsafe(running.queue.put_nowait, (kind, data))

        def work() -> None:
            try:
                with model_lock:
                    for chunk in answer:
                        if running.stop.is_set():  # the page went away: the round is not kept
                            return
                        put("chunk", chunk)
                put("done", None)
            except ModelError as exc:
                put("error", str(exc))
            except Exception as exc:  # never leave the page waiting without a word
                put("error", f"internal error: {type(exc).__name__}: {exc}")
            finally:
                item.busy = False

        threading.Thread(target=work, name="chat-answer", daemon=True).start()
        return running

    async def _events(item: _Conversation, running: _Answer) -> AsyncIterator[str]:
        """Relay the worker's chunks as server-sent events: ``chunk``*, then ``done`` (state) or ``error``."""
        try:
            while True:
                kind, data = await running.queue.get()
                if kind == "done":
                    yield _sse("done", state(item))
                    return
                yield _sse(kind, data)
                if kind == "error":
                    return
        finally:
            running.stop.set()

    return app


def serve(app: FastAPI, host: str, port: int, *, announce: str = "") -> None:
    """Run ``app`` with uvicorn on ``host:port`` and print the address (a warning when not loopback)."""
    import uvicorn

    print(f"GPT4RoI region chat: http://{'[' + host + ']' if ':' in host else host}:{port}/ {announce}".rstrip())
    if host not in LOOPBACK:
        print(f"warning: serving on {host}, reachable from other machines; the chat has no login")
    uvicorn.run(app, host=host, port=port, log_level="warning")
