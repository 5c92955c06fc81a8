"""Where the suite's Hydra configs live and how a command's config is composed.

A library module, not part of the command line: the ``gpt4roi`` CLI composes each command's config with it,
and so do the chat (which looks up ``conf/architecture/<name>.yaml``), the demo and the tests, none of which
may import the CLI itself.
"""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` folder: ``$GPT4ROI_CONF`` or the one beside the installed (editable) packages."""
    override = os.environ.get("GPT4ROI_CONF")
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "conf"
    if not path.is_dir():
        raise SystemExit(f"gpt4roi: config folder {path} not found (set GPT4ROI_CONF to the project's conf/)")
    return path


def compose(command: str, overrides: list[str]):
    """The composed config of ``command`` with ``overrides`` applied (Hydra's compose API, no chdir).

    The primary config is ``conf/<command>/config.yaml`` with its groups beside it; ``conf/`` itself is on
    Hydra's search path too, so groups that several commands share (``conf/architecture/``) live once, at
    the top.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    root = config_dir()
    with initialize_config_dir(config_dir=str(root / command), version_base="1.3", job_name=command):
        return hydra_compose(config_name="config", overrides=[f"hydra.searchpath=['file://{root}']", *overrides])
