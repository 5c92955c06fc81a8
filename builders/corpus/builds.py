"""Source builds a recipe needs: built now, or reused when a finished build with the same options exists."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.build import build_source
from builders.corpus.recipe import BuildSpec, Recipe, options_dict
from builders.corpus.settings import Settings
from builders.errors import SourceFileError
from builders.schema import FEATURES
from builders.storage.datafolder import SplitFiles, check_schema, list_splits


@dataclass
class Build:
    """A source build ready to read: its folder, report and the raw root its image paths are relative to."""

    spec: BuildSpec
    folder: Path
    raw_root: Path | None
    report: dict[str, Any]
    reused: bool
    splits: dict[str, SplitFiles] = field(default_factory=dict)


def _build_matches(folder: Path, spec: BuildSpec, seed: int, splits: set[str]) -> bool:
    """Whether ``folder`` holds a finished build of ``spec`` with every needed split."""
    report_path = folder / "build_report.json"
    if not report_path.is_file():
        return False
    report = json.loads(report_path.read_text())
    options = report.get("options", {})
    same = (report.get("seed") == seed and all(options.get(k) == v for k, v in options_dict(spec).items()))
    have = {split.split for split in list_splits(folder)} if same else set()
    return same and splits <= have


def prepare_builds(recipe: Recipe, settings: Settings) -> dict[BuildSpec, Build]:
    """Every build the recipe needs, built now or reused (see the module docstring)."""
    builds: dict[BuildSpec, Build] = {}
    for spec, needed in recipe.builds().items():
        raw_root = spec.raw_root(settings.raw_root) if settings.raw_root else (Path(spec.raw) if spec.raw else None)
        if spec.build:
            folder, reused = Path(spec.build), True
        else:
            if raw_root is None:
                raise ValueError(f"recipe {recipe.name}: builder {spec.builder} needs raw_root=<dir>")
            folder = settings.builds_dir() / spec.key(settings.seed)
            reused = not settings.rebuild and _build_matches(folder, spec, settings.seed, needed)
            if not reused:
                build_source(spec.builder, raw_root, folder, splits=sorted(needed), seed=settings.seed,
                             options=options_dict(spec), max_shard_bytes=settings.max_shard_bytes,
                             progress=settings.progress, num_proc=settings.num_proc)
        report_path = folder / "build_report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else {}
        build = Build(spec, folder, raw_root, report, reused, {s.split: s for s in list_splits(folder)})
        missing = sorted(needed - set(build.splits))
        if missing:
            raise SourceFileError(folder, f"build of {spec.builder} lacks split(s) {missing}",
                                  expected=f"splits {sorted(needed)}")
        for split in needed:
            for path in build.splits[split].paths:
                check_schema(path, FEATURES.arrow_schema)
        builds[spec] = build
    return builds
