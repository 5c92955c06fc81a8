"""GPT4RoI's conversation template (LLaVA "v0"): the system message, the role names and the stop marker.

Its own module because two sides need the same words: :mod:`gpt4roi.processing` writes every prompt and
answer with them, and :mod:`gpt4roi.tokenizer` teaches the tiny BPE their spelling. Generation stops at
:data:`STOP_MARKER`, which ends each assistant answer and opens the next turn's header.
"""

from __future__ import annotations

SYSTEM_MESSAGE = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
HUMAN_ROLE, ASSISTANT_ROLE = "Human", "Assistant"
STOP_MARKER = "###"
ROLE_NAMES = {"human": HUMAN_ROLE, "gpt": ASSISTANT_ROLE}
