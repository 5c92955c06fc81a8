"""The ``gpt4roi`` command: ``gpt4roi <command> [key=value ...]`` with Hydra overrides.

Each command has a config folder and primary config (by default ``conf/<command>/config.yaml``, whose config
groups live beside it, so ``gpt4roi build source=vg`` picks ``conf/build/source/vg.yaml``) and an entry point
``main(cfg)`` in its module, imported only when the command runs (so ``gpt4roi build`` never imports torch).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

COMMANDS: dict[str, tuple[str, str]] = {  # command -> (module:function, help)
    "build": ("builders.build:main", "build one source's raw release into the schema"),
    "synth": ("builders.synthetic.cli:main", "write the synthetic world's raw releases"),
    "demo": ("gpt4roi.demo:main", "synthesise a world, build every source, show an example"),
    "corpus": ("builders.corpus.command:main", "assemble a training corpus from a recipe"),
    "contamination": ("builders.corpus.contamination:main", "report train/eval image and region overlap"),
    "publish": ("builders.corpus.publish:main", "upload a corpus folder to the Hugging Face Hub"),
    "train": ("gpt4roi.train:main", "train GPT4RoI or a baseline"),
    "eval": ("evaluators.runner:main", "evaluate a model on region tasks"),
    "leaderboard": ("evaluators.leaderboard:main", "render the leaderboard of evaluated models"),
    "chat": ("gpt4roi.chat:main", "talk about boxes drawn on an image"),
}
# Commands whose config composes groups from the whole conf/ tree: (folder under conf/, primary config name).
CONFIG_LOCATIONS: dict[str, tuple[str, str]] = {
    "train": (".", "train_main"),
}


def config_dir() -> Path:
    """The ``conf/`` folder: ``$GPT4ROI_CONF`` or the one beside the installed (editable) packages."""
    override = os.environ.get("GPT4ROI_CONF")
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "conf"
    if not path.is_dir():
        raise SystemExit(f"gpt4roi: config folder {path} not found (set GPT4ROI_CONF to the project's conf/)")
    return path


def compose(command: str, overrides: list[str]):
    """The composed config of ``command`` with ``overrides`` applied (Hydra's compose API, no chdir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    folder, name = CONFIG_LOCATIONS.get(command, (command, "config"))
    with initialize_config_dir(config_dir=str(config_dir() / folder), version_base="1.3", job_name=command):
        return hydra_compose(config_name=name, overrides=overrides)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gpt4roi <command> [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "gpt4roi <command> --cfg prints the composed config of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gpt4roi: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    show_config = "--cfg" in overrides
    overrides = [item for item in overrides if item != "--cfg"]

    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(command, overrides)
        if show_config:
            print(OmegaConf.to_yaml(cfg))
            return 0
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            print(f"gpt4roi {command}: missing required setting(s): {', '.join(missing)} "
                  f"(give them as key=value)", file=sys.stderr)
            return 2
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"gpt4roi {command}: configuration error: {exc}", file=sys.stderr)
        return 2

    module_name, function_name = COMMANDS[command][0].split(":")
    entry = getattr(importlib.import_module(module_name), function_name)
    from builders.errors import BuildError

    try:
        result = entry(cfg)
    except (BuildError, FileNotFoundError, ValueError) as exc:
        print(f"gpt4roi {command}: error: {exc}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
