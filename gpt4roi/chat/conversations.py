"""The web page's conversations: one :class:`~gpt4roi.chat.session.Session` per browser, kept in memory.

The store is bounded because every conversation holds a decoded image. Each conversation is dropped on its own
after ``idle_seconds`` without a request; a full store refuses to start new conversations (the page says when
to try again) rather than dropping a live one, so a flood of new clients cannot push out someone's work.
Conversations start with the first image: a browser that only looks at the page, or a client that never keeps
its cookie, takes no place in the store.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .models import ChatModel
from .session import ConversationLimits, Session


@dataclass
class Conversation:
    """One browser's session, with what the server needs around it.

    ``busy`` is set while an answer is being written, so that the page cannot change the conversation under
    the model; ``image_version`` changes the image's URL on every new image, so browsers do not show a
    cached one; ``lock`` makes checking and setting ``busy`` one step; ``last_used`` (the store's clock) is
    when a request last touched it.
    """

    session: Session
    busy: bool = False
    image_version: int = 0
    last_used: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StoreFull(Exception):
    """No room for a new conversation; ``retry_after`` is how many seconds until the next one expires."""

    def __init__(self, held: int, idle_seconds: float, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the server already holds {held} conversations, its limit; a conversation ends after "
                         f"{idle_seconds / 60:g} minutes without use, so try again in about "
                         f"{math.ceil(retry_after / 60)} minute(s)")


class SessionStore:
    """Conversations by session key: each ends after ``idle_seconds`` unused, at most ``max_sessions`` at once."""

    def __init__(self, model: ChatModel, max_sessions: int, *, idle_seconds: float = 3600.0,
                 limits: ConversationLimits | None = None, clock: Callable[[], float] = time.monotonic):
        self.model = model
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self.limits = limits or ConversationLimits()
        self.clock = clock
        self._items: dict[str, Conversation] = {}
        self._lock = threading.Lock()

    def _blank(self) -> Conversation:
        return Conversation(Session(self.model, session_id=secrets.token_hex(6), limits=self.limits))

    def _expire(self, now: float) -> None:
        for key, item in list(self._items.items()):
            if not item.busy and now - item.last_used > self.idle_seconds:
                del self._items[key]

    def find(self, key: str) -> Conversation | None:
        """The live conversation of ``key`` (marked as used now), or None."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            item = self._items.get(key)
            if item is not None:
                item.last_used = now
            return item

    def view(self, key: str) -> Conversation:
        """The conversation of ``key``, or an empty one that is not stored (nothing to keep yet)."""
        return self.find(key) or self._blank()

    def create(self, key: str) -> Conversation:
        """The conversation of ``key``, started now if it has none; :class:`StoreFull` when there is no room."""
        with self._lock:
            now = self.clock()
            self._expire(now)
            item = self._items.get(key)
            if item is None:
                if len(self._items) >= self.max_sessions:
                    oldest = min(i.last_used for i in self._items.values())
                    raise StoreFull(len(self._items), self.idle_seconds,
                                    max(1, math.ceil(oldest + self.idle_seconds - now)))
                item = self._items[key] = self._blank()
            item.last_used = now
            return item

    def __len__(self) -> int:
        return len(self._items)
