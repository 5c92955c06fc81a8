"""``gpt4roi chat``: load the model named by ``model=`` and start the web page or the terminal chat."""

from __future__ import annotations

from typing import Any

from .images import ImageLimits
from .loading import load_chat_model
from .session import ConversationLimits, Session

UIS = ("web", "cli")


def limits_from(cfg: Any) -> ImageLimits:
    return ImageLimits(max_bytes=int(float(cfg.max_upload_mb) * 1024 * 1024), max_side=int(cfg.max_side),
                       max_pixels=int(cfg.max_pixels))


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi chat`` (config: conf/chat/config.yaml)."""
    if cfg.ui not in UIS:
        raise ValueError(f"ui={cfg.ui!r}: expected one of {', '.join(UIS)}")
    limits = limits_from(cfg.limits)
    conversation = ConversationLimits(max_boxes=int(cfg.limits.max_boxes), max_rounds=int(cfg.limits.max_rounds))
    model, name = load_chat_model(str(cfg.model), device=str(cfg.device), max_new_tokens=int(cfg.max_new_tokens))
    if cfg.ui == "cli":
        from .cli import load_image_file, run_terminal

        session = Session(model, limits=conversation)
        if cfg.image:
            print(load_image_file(session, cfg.image, limits))
        return run_terminal(session, limits=limits)
    from .server import create_app, serve

    app = create_app(model, limits=limits, max_sessions=int(cfg.max_sessions), idle_minutes=float(cfg.idle_minutes),
                     conversation=conversation, allowed_hosts=[str(h) for h in cfg.allowed_hosts or []],
                     model_name=name)
    serve(app, str(cfg.host), int(cfg.port), announce=f"(model: {name}; Ctrl+C stops it)")
    return 0
