"""Which model answers in the chat: ``model=`` names the geometry model, a model config or a checkpoint."""

from __future__ import annotations

from .models import BoxGeometryModel, ChatModel

GEOMETRY = "geometry"


def load_chat_model(spec: str, *, device: str = "cpu", max_new_tokens: int = 128) -> tuple[ChatModel, str]:
    """The chat model for ``spec`` and a name to show on the page.

    ``geometry``: :class:`BoxGeometryModel` (no weights).
    """
    if spec == GEOMETRY:
        return BoxGeometryModel(), "BoxGeometryModel (describes the boxes; no weights)"
    raise ValueError(f"model={spec!r}: expected {GEOMETRY!r}")
