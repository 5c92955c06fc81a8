"""Interactive region chat: draw boxes on an image and talk about ``<region1>``, ``<region2>``, ...

``gpt4roi chat model=... [ui=web|cli]`` starts it (:func:`main`); from Python, :class:`Session` holds one
conversation and asks any :class:`ChatModel`. The web server lives in :mod:`gpt4roi.chat.server` (imported
only when the page is served, so the session logic needs no web libraries).
"""

from __future__ import annotations

from .main import main
from .models import BoxGeometryModel, ChatModel, GenerateAdapter, as_chat_model
from .session import Box, ChatError, ModelError, Session

__all__ = ["Box", "BoxGeometryModel", "ChatError", "ChatModel", "GenerateAdapter", "ModelError", "Session",
           "as_chat_model", "main"]
