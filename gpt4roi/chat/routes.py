"""The web page's API: the page itself, the conversation's state, images (uploads and examples), questions.

Every route finds its browser's conversation through the session key the middleware put in the request scope
(:mod:`gpt4roi.chat.server`), and what the routes share (limits, the model lock) on ``app.state.chat``. Only a
new image starts a conversation in the store (:mod:`.conversations`); the other routes see an empty one until
then. Routes that change a conversation refuse while an answer is still being written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, Field

from .answers import answer_events, start_answer
from .conversations import Conversation, StoreFull
from .errors import RequestTooLarge, error_response
from .examples import example_image, example_names
from .images import ImageLimits, ImageRejected, decode_image
from .session import ChatError

STATIC = Path(__file__).resolve().parent / "static"
router = APIRouter()


class ChatRequest(BaseModel):
    message: str
    boxes: list[list[float]] = Field(default_factory=list)


class ExampleRequest(BaseModel):
    name: str


@dataclass
class ChatContext:
    """What every conversation shares: the upload limits, the model's name shown on the page, and the lock
    that lets one answer at a time use the model."""

    limits: ImageLimits
    model_name: str
    model_lock: threading.Lock = field(default_factory=threading.Lock)


def _context(request: Request) -> ChatContext:
    return request.app.state.chat


def _conversation(request: Request) -> Conversation:
    return request.app.state.store.view(request.scope["chat_key"])


def _busy_refusal(request: Request) -> JSONResponse | None:
    """The refusal for a request that would replace the image while an answer is being written."""
    item = request.app.state.store.find(request.scope["chat_key"])
    return _refuse_if_busy(item) if item is not None else None


def page_state(item: Conversation, model_name: str) -> dict[str, Any]:
    """Everything the page draws from: the image's size and URL, the boxes, the history."""
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


def _refuse_if_busy(item: Conversation) -> JSONResponse | None:
    if item.busy:
        return error_response(409, "the previous answer is still being written; wait for it to finish")
    return None


def _use_image(request: Request, image: Image.Image, name: str) -> JSONResponse:
    """Start (or restart) the conversation with ``image``: the one route that gives a browser a stored
    conversation, refused with 503 when the store is full."""
    try:
        item = request.app.state.store.create(request.scope["chat_key"])
    except StoreFull as exc:
        response = error_response(503, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    with item.lock:
        if refusal := _refuse_if_busy(item):
            return refusal
        item.session.set_image(image, name)
        item.image_version += 1
    return JSONResponse(page_state(item, _context(request).model_name))


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/api/state")
async def get_state(request: Request) -> dict[str, Any]:
    return page_state(_conversation(request), _context(request).model_name)


@router.get("/api/examples")
async def examples(request: Request) -> dict[str, Any]:
    limits = _context(request).limits
    return {"examples": example_names(),
            "limits": {"max_bytes": limits.max_bytes, "max_side": limits.max_side}}


@router.post("/api/example")
async def pick_example(body: ExampleRequest, request: Request) -> Response:
    if refusal := _busy_refusal(request):
        return refusal
    try:
        image = example_image(body.name)
    except KeyError as exc:
        return error_response(404, exc.args[0])
    return _use_image(request, image, f"{body.name}.png")


@router.post("/api/image")
async def upload(request: Request) -> Response:
    if refusal := _busy_refusal(request):
        return refusal
    try:
        form = await request.form(max_files=1, max_fields=4)
    except RequestTooLarge:
        raise
    except Exception as exc:  # python-multipart's parse errors
        return error_response(400, f"the upload could not be read as a form: {exc}")
    upload_file = form.get("file")
    if upload_file is None or isinstance(upload_file, str):
        return error_response(400, "the form has no file field named 'file'")
    limits = _context(request).limits
    name = Path(upload_file.filename or "upload").name
    data = await upload_file.read(limits.max_bytes + 1)
    try:
        image = decode_image(data, limits, name)
    except ImageRejected as exc:
        return error_response(exc.status, str(exc))
    return _use_image(request, image, name)


@router.get("/api/image")
async def image(request: Request) -> Response:
    session = _conversation(request).session
    if session.image is None:
        return error_response(404, "no image yet")
    return Response(session.image_png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/api/clear")
async def clear(request: Request) -> Response:
    item = _conversation(request)
    if refusal := _refuse_if_busy(item):
        return refusal
    item.session.clear()
    return JSONResponse(page_state(item, _context(request).model_name))


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    item = _conversation(request)
    context = _context(request)
    with item.lock:
        if refusal := _refuse_if_busy(item):
            return refusal
        try:
            item.session.set_boxes(body.boxes)
            answer = item.session.stream(body.message)
        except ChatError as exc:
            return error_response(400, str(exc))
        item.busy = True
    running = start_answer(item, answer, context.model_lock)
    return StreamingResponse(answer_events(running, lambda: page_state(item, context.model_name)),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
