"""The ``gpt4roi`` command: ``gpt4roi <command> [key=value ...]`` with Hydra overrides.

Each command has a primary config ``conf/<command>/config.yaml`` whose config groups live beside it (so
``gpt4roi build source=vg`` picks ``conf/build/source/vg.yaml``; shared groups such as ``conf/architecture/``
sit at the top of ``conf/``) and an entry point named by a ``"module:function"`` string, imported only when the
command runs (so ``gpt4roi build`` never imports torch). This module is the composition root: it may name any
floor's entry point, and no library module imports it.
"""

from __future__ import annotations

import importlib
import sys

from .configs import compose

COMMANDS: dict[str, tuple[str, str]] = {  # command -> (module:function, help)
    "build": ("builders.build:main", "build one source's raw release into the schema"),
    "synth": ("builders.synthetic.cli:main", "write the synthetic world's raw releases"),
    "demo": ("baselines.demo:main", "the suite end to end on a synthetic world: build, train, evaluate, rank"),
    "corpus": ("builders.corpus.command:main", "assemble a training corpus from a recipe"),
    "contamination": ("builders.corpus.contamination:main", "report train/eval image and region overlap"),
    "publish": ("builders.corpus.publish:main", "upload a corpus folder to the Hugging Face Hub"),
    "train": ("gpt4roi.train:main", "train GPT4RoI or a baseline"),
    "eval": ("evaluators.runner:main", "evaluate a model on region tasks"),
    "leaderboard": ("evaluators.leaderboard:main", "render the leaderboard of evaluated models"),
    "chat": ("gpt4roi.chat:main", "talk about boxes drawn on an image"),
    "pretrain": ("gpt4roi.pretrain:main", "pretrain the tiny backbone (LLM + vision tower) on the synthetic world"),
    "convert": ("gpt4roi.convert:main", "turn the released GPT4RoI weights into a loadable model folder"),
    "grounding_rows": ("baselines.grounding_rows:main", "derive box-answer training rows from a built RefCOCO folder"),
}
HELP_FLAGS = {"-h", "--help"}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gpt4roi <command> [key=value ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "gpt4roi <command> --help lists a command's keys and config groups;",
              "gpt4roi <command> --cfg prints its composed config."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {*HELP_FLAGS, "help"}:
        print(_usage())
        return 0
    command, overrides = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gpt4roi: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if HELP_FLAGS & set(overrides):
        from .config_help import command_help

        print(command_help(command, COMMANDS[command][1]))
        return 0
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
