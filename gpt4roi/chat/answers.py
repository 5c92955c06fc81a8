"""Writing one answer to the page while the model produces it: a worker thread and server-sent events.

The model is called in a worker thread because generation blocks for seconds and would stall every other
request on the event loop; its chunks travel to the response over an asyncio queue. One lock serialises the
model across conversations (a shared torch model is not safe to call from several threads).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .conversations import Conversation
from .session import ModelError


@dataclass
class RunningAnswer:
    """An answer being written by a worker thread: its chunks and a flag to stop it."""

    queue: asyncio.Queue[tuple[str, Any]]
    stop: threading.Event


def start_answer(item: Conversation, answer: Iterator[str], model_lock: threading.Lock) -> RunningAnswer:
    """Run the model in a worker thread now; its chunks arrive on the returned queue.

    The worker, not the response, clears ``busy``, so a page that goes away before reading cannot leave
    its conversation locked.
    """
    loop = asyncio.get_running_loop()
    running = RunningAnswer(asyncio.Queue(), threading.Event())

    def put(kind: str, data: Any) -> None:
        loop.call_soon_threadsafe(running.queue.put_nowait, (kind, data))

    def work() -> None:
        try:
            with model_lock:
                try:
                    for chunk in answer:
                        if running.stop.is_set():  # the page went away: the round is not kept
                            return
                        put("chunk", chunk)
                finally:  # a streaming model stops generating before the next answer takes the lock
                    close = getattr(answer, "close", None)
                    if close is not None:
                        close()
            put("done", None)
        except ModelError as exc:
            put("error", str(exc))
        except Exception as exc:  # never leave the page waiting without a word
            put("error", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            item.busy = False

    threading.Thread(target=work, name="chat-answer", daemon=True).start()
    return running


async def answer_events(running: RunningAnswer,
                        final_state: Callable[[], dict[str, Any]]) -> AsyncIterator[str]:
    """Relay the worker's chunks as server-sent events: ``chunk``*, then ``done`` or ``error``.

    ``done`` carries ``final_state()``, read once the round is in the history, so the page can redraw from it.
    """
    try:
        while True:
            kind, data = await running.queue.get()
            if kind == "done":
                yield _sse("done", final_state())
                return
            yield _sse(kind, data)
            if kind == "error":
                return
    finally:
        running.stop.set()


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
