"""Corpus recipes: which source builds go into a corpus, how much of each, and what to check it against.

A recipe is plain configuration (``conf/corpus/recipe/<name>.yaml``), so a user writes a new mixture without
code::

    name: stage1
    sources:                      # one dataset config per entry, in this order in the mix
      coco:
        builder: coco             # a name of builders.sources.BUILDERS
        raw: coco                 # the release folder, relative to raw_root (or absolute)
        options: {year: "2017"}   # builder options (conf/build/source/<builder>.yaml)
        splits: [train]
        sample: null              # keep all; N: keep N rows chosen by a seeded hash of their ids
        repeat: 1                 # k: every kept row appears k times (copies get ids <id>:r2 ... <id>:rk)
        variants: null            # keep only rows of these variants (several entries can share one build)
        build: null               # an existing build folder to use instead of building
    eval:                         # evaluation splits the contamination check runs against
      refcocog: {builder: refcocog, raw: refer, options: {split_by: umd}, splits: [validation, test]}

Entries with the same builder, raw folder and options share one build.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders.schema import SPLITS

SOURCE_KEYS = {"builder", "raw", "options", "splits", "sample", "repeat", "variants", "build"}
EVAL_KEYS = {"builder", "raw", "options", "splits", "build"}  # every row of an eval split is checked


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the recipe entry and the problem."""


@dataclass(frozen=True)
class BuildSpec:
    """What identifies one source build: same spec, same rows."""

    builder: str
    raw: str | None
    options: tuple[tuple[str, Any], ...]
    build: str | None

    def key(self, seed: int) -> str:
        """A stable folder name for this build under the builds folder."""
        payload = json.dumps([self.builder, self.raw, self.options, seed], sort_keys=True, default=str)
        return f"{self.builder}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def raw_root(self, base: Path) -> Path | None:
        if self.raw is None:
            return None
        raw = Path(self.raw)
        return raw if raw.is_absolute() else base / raw


@dataclass(frozen=True)
class Entry:
    """One recipe entry: a dataset config of the corpus (``sources``) or an evaluation set (``eval``)."""

    name: str
    spec: BuildSpec
    splits: tuple[str, ...]
    variants: tuple[str, ...] | None = None
    sample: int | None = None
    repeat: int = 1


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    sources: tuple[Entry, ...]
    eval: tuple[Entry, ...]
    raw: dict[str, Any]  # the recipe as written, for the card

    def builds(self) -> dict[BuildSpec, set[str]]:
        """Every distinct build and the splits the recipe needs from it."""
        needed: dict[BuildSpec, set[str]] = {}
        for entry in self.sources + self.eval:
            needed.setdefault(entry.spec, set()).update(entry.splits)
        return needed


def _names(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(item, str) and item for item in items):
        raise RecipeError(f"{where}: expected a name or a non-empty list of names, got {value!r}")
    return tuple(items)


def _entry(name: str, data: Any, *, section: str, sources: dict[str, Entry]) -> Entry:
    where = f"recipe {section}.{name}"
    if data is None and section == "eval" and name in sources:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    allowed = SOURCE_KEYS if section == "sources" else EVAL_KEYS
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown setting(s) {unknown}; known: {sorted(allowed)}")
    base = sources.get(name) if section == "eval" and "builder" not in data else None
    if base is None and "builder" not in data:
        raise RecipeError(f"{where}: needs 'builder' (or the name of a sources entry to reuse its build)")
    if base is not None:
        spec = base.spec
    else:
        if not data.get("raw") and not data.get("build"):
            raise RecipeError(f"{where}: needs 'raw' (the release folder) or 'build' (an existing build)")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise RecipeError(f"{where}.options: expected a mapping, got {options!r}")
        spec = BuildSpec(str(data["builder"]), str(data["raw"]) if data.get("raw") else None,
                         tuple(sorted((str(k), _freeze(v)) for k, v in options.items())),
                         str(data["build"]) if data.get("build") else None)
    variants = _names(data.get("variants"), f"{where}.variants")
    splits = _names(data.get("splits", ["train"] if section == "sources" else None), f"{where}.splits")
    if not splits:
        raise RecipeError(f"{where}: needs 'splits' (the evaluation splits to check against)")
    bad = [split for split in splits if split not in SPLITS]
    if bad:
        raise RecipeError(f"{where}.splits: unknown split(s) {bad}; expected names from {list(SPLITS)}")
    sample, repeat = data.get("sample"), data.get("repeat", 1)
    if sample is not None and (not isinstance(sample, int) or isinstance(sample, bool) or sample < 0):
        raise RecipeError(f"{where}.sample: expected null (keep all) or a row count >= 0, got {sample!r}")
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise RecipeError(f"{where}.repeat: expected an integer >= 1, got {repeat!r}")
    return Entry(name, spec, splits, variants, sample, repeat)


def _freeze(value: Any) -> Any:
    """Options as hashable values (lists to tuples) so that equal options share a build."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def options_dict(spec: BuildSpec) -> dict[str, Any]:
    """The builder options of a spec as plain values (tuples back to lists)."""
    def thaw(value: Any) -> Any:
        return [thaw(item) for item in value] if isinstance(value, tuple) else value
    return {key: thaw(value) for key, value in spec.options}


def parse_recipe(data: dict[str, Any]) -> Recipe:
    """A checked :class:`Recipe` from its plain-dict form (``OmegaConf.to_container(cfg.recipe)``)."""
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe is a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - {"name", "description", "sources", "eval"})
    if unknown:
        raise RecipeError(f"recipe: unknown key(s) {unknown}; expected name, description, sources, eval")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise RecipeError("recipe: needs a 'name'")
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, dict) or not raw_sources:
        raise RecipeError(f"recipe {name}: 'sources' must map config names to entries (none given)")
    sources: dict[str, Entry] = {}
    for entry_name, entry in raw_sources.items():
        if str(entry_name) in ("default", "data"):
            raise RecipeError(f"recipe {name}: '{entry_name}' is reserved; rename the sources entry")
        sources[str(entry_name)] = _entry(str(entry_name), entry, section="sources", sources={})
    evals = tuple(_entry(str(key), value, section="eval", sources=sources)
                  for key, value in (data.get("eval") or {}).items())
    return Recipe(name, str(data.get("description") or ""), tuple(sources.values()), evals, data)
