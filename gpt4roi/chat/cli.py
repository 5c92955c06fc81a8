"""The chat in a terminal (``gpt4roi chat ui=cli``): boxes are typed as coordinates instead of drawn.

Lines starting with ``/`` are commands; any other line is a question to the model, streamed as it is
written. The same :class:`~gpt4roi.chat.session.Session` as the web page keeps the numbering and history.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .images import ImageLimits, ImageRejected, decode_image
from .session import ChatError, ModelError, Session, parse_box

HELP = """commands:
  /image PATH             load an image (starts a new conversation)
  /box x1 y1 x2 y2        add a box in image pixels; prints its number K (refer to it as <regionK>)
  /move K x1 y1 x2 y2     move or resize box K (only before it is used in the conversation)
  /delete K               delete box K (only before it is used in the conversation)
  /boxes                  list the boxes
  /history                show the conversation so far
  /clear                  forget the boxes and the conversation, keep the image
  /help                   this text
  /quit                   leave (end of input works too)
anything else is a message, e.g.  What is <region1> doing next to <region2>?"""


def load_image_file(session: Session, path: str | Path, limits: ImageLimits) -> str:
    """Load the image at ``path`` into ``session`` with the web upload's checks; a line describing it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ChatError(f"{path}: cannot read the image ({exc.strerror or exc})") from None
    try:
        image = decode_image(data, limits, str(path))
    except ImageRejected as exc:
        raise ChatError(str(exc)) from None
    session.set_image(image, path.name)
    return f"image {path.name}: {image.width}x{image.height} pixels"


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ChatError(f"expected a box number, got {text!r}") from None


def _command(session: Session, line: str, limits: ImageLimits, out: TextIO) -> bool:
    """Run one ``/command``; False when the user asked to leave."""
    name, _, argument = line[1:].strip().partition(" ")
    argument = argument.strip()
    if name in {"quit", "exit", "q"}:
        return False
    if name == "help":
        print(HELP, file=out)
    elif name == "image":
        if not argument:
            raise ChatError("usage: /image PATH")
        print(load_image_file(session, argument, limits), file=out)
    elif name == "box":
        number = session.add_box(parse_box(argument))
        print(f"box {number}: {session.boxes[number - 1].xyxy} -> refer to it as <region{number}>", file=out)
    elif name == "move":
        number, _, coordinates = argument.partition(" ")
        session.move_box(_number(number), parse_box(coordinates))
        print(f"box {number}: {session.boxes[_number(number) - 1].xyxy}", file=out)
    elif name == "delete":
        session.delete_box(_number(argument))
        print(f"deleted box {argument}; boxes now: {len(session.boxes)}", file=out)
    elif name == "boxes":
        for box in session.boxes:
            state = "in the conversation" if box.number <= session.committed else "not used yet"
            print(f"  <region{box.number}> {list(box.xyxy)} ({state})", file=out)
        if not session.boxes:
            print("  no boxes", file=out)
    elif name == "history":
        for question, answer in session.history:
            print(f"you: {question}\nmodel: {answer}", file=out)
    elif name == "clear":
        session.clear()
        print("conversation cleared (the image stays)", file=out)
    else:
        raise ChatError(f"unknown command /{name} (try /help)")
    return True


def run_terminal(session: Session, *, lines: Iterable[str] | None = None, out: TextIO | None = None,
                 limits: ImageLimits | None = None, prompt: bool = True) -> int:
    """Chat over ``lines`` (standard input by default), writing to ``out`` (standard output by default)."""
    out = out or sys.stdout
    limits = limits or ImageLimits()
    source = iter(lines) if lines is not None else None
    print("GPT4RoI region chat. /help lists the commands.", file=out)
    while True:
        if prompt:
            print("> ", end="", file=out, flush=True)
        try:
            line = next(source) if source is not None else input()
        except (StopIteration, EOFError):
            print(file=out)
            return 0
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/"):
                if not _command(session, line, limits, out):
                    return 0
                continue
            answer = session.stream(line)  # checks the message before anything is printed
            print("model: ", end="", file=out, flush=True)
            try:
                for chunk in answer:
                    print(chunk, end="", file=out, flush=True)
            finally:
                print(file=out)
        except (ChatError, ModelError) as exc:
            print(f"error: {exc}", file=out)
