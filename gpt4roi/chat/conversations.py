"""The web page's conversations: one :class:`~gpt4roi.chat.session.Session` per browser, kept in memory.

The store is bounded because every conversation holds a decoded image: beyond ``max_sessions`` the least
recently used one is dropped, so a stream of new browsers cannot exhaust the server's memory.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from .models import ChatModel
from .session import Session


@dataclass
class Conversation:
    """One browser's session, with what the server needs around it.

    ``busy`` is set while an answer is being written, so that the page cannot change the conversation under
    the model; ``image_version`` changes the image's URL on every new image, so browsers do not show a
    cached one; ``lock`` makes checking and setting ``busy`` one step.
    """

    session: Session
    busy: bool = False
    image_version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionStore:
    """Conversations by cookie value, the least recently used dropped beyond ``max_sessions``."""

    def __init__(self, model: ChatModel, max_sessions: int):
        self.model = model
        self.max_sessions = max_sessions
        self._items: OrderedDict[str, Conversation] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Conversation:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            conversation = Conversation(Session(self.model, session_id=secrets.token_hex(6)))
            self._items[key] = conversation
            while len(self._items) > self.max_sessions:
                self._items.popitem(last=False)
            return conversation

    def __len__(self) -> int:
        return len(self._items)
