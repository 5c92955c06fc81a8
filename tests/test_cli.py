"""The ``gpt4roi`` command line: every command's config composes from ``conf/<command>/config.yaml``, every
knob is set in one place, and ``--help`` explains the keys with their YAML comments."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from gpt4roi.cli import COMMANDS, main
from gpt4roi.config_help import config_groups, documented_keys

REPO = Path(__file__).resolve().parent.parent

# Several instances of one schema: a key in each is one knob per instance, not one knob set twice.
INSTANCES = [
    (re.compile(r"^(corpus|eval_corpus)\."), "<corpus>."),                     # train: training and held-out corpus
    (re.compile(r"^architecture\.(vision|text)\."), "architecture.<tower>."),  # the two transformers' configs
    (re.compile(r"^recipe\.(sources|eval)\.[^.]+\."), "recipe.<entry>."),     # corpus: one entry per source
]
LABELS = {"name"}  # what each thing is called (an architecture, a schedule, a dataset config): not a setting
# Keys of one name that mean different things within a command, each place with its meaning.
DISTINCT = {
    ("eval", "seed"): {"bootstrap.seed": "resampling of the intervals", "model.seed": "the chance floor's picks"},
    ("eval", "batch_size"): {"batch_size": "requests per model call (the cache commits after each)",
                             "model.batch_size": "requests per forward pass of a trained model"},
    ("corpus", "variants"): {"recipe.<entry>.options.variants": "the variants a source's build writes",
                             "recipe.<entry>.variants": "the ones of them a recipe entry keeps"},
    **{("pretrain", knob): {f"language_model.{knob}": f"the language model's {meaning}",
                            f"vision.{knob}": f"the contrastive vision tower's {meaning}",
                            f"projector.{knob}": f"the caption-aligned projector's {meaning}"}
       for knob, meaning in [("steps", "optimiser steps"), ("batch_size", "batch"), ("lr", "learning rate")]},
    ("pretrain", "margin"): {"vision.margin": "context cropped around each object for the contrastive tower",
                             "architecture.renderer.margin": "context a crop renderer keeps around the region"},
}


def composed(capsys, command: str, *overrides: str) -> DictConfig:
    """``gpt4roi <command> [overrides] --cfg``, read back with its interpolations kept."""
    assert main([command, *overrides, "--cfg"]) == 0
    return OmegaConf.create(capsys.readouterr().out)


def knob_places(cfg: DictConfig) -> dict[str, set[str]]:
    """Each key name -> the places (dotted, instances folded) where it holds a value of its own, not an
    interpolation of another key."""
    places: dict[str, set[str]] = defaultdict(set)

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            if OmegaConf.is_interpolation(node, key):
                continue
            value = None if OmegaConf.is_missing(node, key) else node[key]
            if isinstance(value, DictConfig):
                walk(value, f"{prefix}{key}.")
                continue
            place = f"{prefix}{key}"
            for pattern, folded in INSTANCES:
                place = pattern.sub(folded, place)
            places[str(key)].add(place)

    walk(cfg, "")
    return places


def variants(command: str) -> list[list[str]]:
    """The default config of ``command`` and one with each option of each of its groups."""
    return [[]] + [[f"{group.name}={option}"] for group in config_groups(command) for option in group.options]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_knob_of_every_command_is_set_in_one_place(command, capsys):
    for overrides in variants(command):
        for key, places in knob_places(composed(capsys, command, *overrides)).items():
            if len(places) > 1 and key not in LABELS:
                assert places <= set(DISTINCT.get((command, key), {})), \
                    f"gpt4roi {command} {' '.join(overrides)}: {key} is set in {sorted(places)}"


def test_the_training_config_holds_seed_max_length_and_image_root_once(capsys):
    experiments = next(group for group in config_groups("train") if group.name == "experiment").options
    for overrides in [[], *([f"experiment={name}"] for name in experiments)]:
        places = knob_places(composed(capsys, "train", *overrides))
        assert places["seed"] == {"seed"}, overrides
        assert places["max_length"] == {"architecture.max_length"}, overrides
        assert places["image_root"] == {"<corpus>.image_root"}, overrides  # one per corpus
    default = composed(capsys, "train")
    assert OmegaConf.is_interpolation(default.eval_corpus, "image_root")  # the held-out rows' root follows by default


def test_every_command_composes_from_its_own_folder_and_the_shared_groups(capsys):
    for command in COMMANDS:
        assert (REPO / "conf" / command / "config.yaml").is_file()
        composed(capsys, command)
    train = composed(capsys, "train", "architecture=tiny_image_coords", "trainer=stage2")
    assert train.architecture.renderer.name == "image_coords" and train.trainer.strategy == "fsdp"
    assert not (REPO / "conf" / "train_main.yaml").exists() and not (REPO / "conf" / "model").exists()


def test_help_lists_the_keys_with_their_comments_and_the_groups_with_their_options(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()

    def line_of(setting: str) -> str:
        return next(line for line in lines if line.strip().startswith(setting))

    assert "data order" in line_of("seed = 0")
    assert "tokens per sample" in line_of("architecture.max_length = 512")  # the default option's keys, packaged
    assert line_of("trainer.optimizer.lr = 2.0e-5")
    assert "first N rows" in line_of("corpus.max_rows = null")                 # nested keys dotted
    assert re.search(r"^  architecture +gpt4roi_7b, tiny\*, tiny_blind, ", text, re.M)
    assert re.search(r"^  trainer +stage1\*, stage2, tiny, vcr_mc ", text, re.M)
    assert re.search(r"^  experiment +gpt4roi_7b_stage1, .*tiny_vcr_mc \(none by default\)", text, re.M)
    assert main(["demo", "--help"]) == 0
    demo = capsys.readouterr().out.splitlines()
    assert any(line.strip().startswith("compare:") and "The comparison:" in line for line in demo)  # block above
    assert any(line.strip().startswith("scale = small") for line in demo)  # the default preset (_global_ package)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gpt4roi {command} ") and "keys (from conf/" in text


def test_documented_keys_reads_line_comments_comment_blocks_and_nested_keys():
    text = """# The file's description,
# no key's help.
defaults:
  - group: a
  - _self_

plain: 1
commented: 2        # at the end of the line
# the block above
# spans two lines
above: x

# a block cut off by a blank line

loose: y
nested:             # a mapping
  inner: "a # not a comment"   # the real comment
  deeper:
    leaf: [1, 2]
text: >-
  folded lines: not keys
after: 3
"""
    keys = [(key.path, key.value, key.comment) for key in documented_keys(text, prefix="pkg")]
    assert keys == [
        ("pkg.plain", "1", ""),
        ("pkg.commented", "2", "at the end of the line"),
        ("pkg.above", "x", "the block above spans two lines"),
        ("pkg.loose", "y", ""),
        ("pkg.nested", "", "a mapping"),
        ("pkg.nested.inner", '"a # not a comment"', "the real comment"),
        ("pkg.nested.deeper.leaf", "[1, 2]", ""),
        ("pkg.text", "(text)", ""),
        ("pkg.after", "3", ""),
    ]
