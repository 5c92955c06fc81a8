"""The base class of every source builder.

A builder is a ``datasets.GeneratorBasedBuilder``: ``builder.download_and_prepare(); builder.as_dataset()``
works as with any Hub dataset script. The suite's own ``gpt4roi build`` command instead streams
:meth:`RegionBuilder.iter_rows` straight into parquet shards (``builders.build``), so that it can count skips,
write atomically and report progress — both paths run the same conversion code.

Subclasses implement :meth:`available_splits` and :meth:`iter_rows`, convert each record with
``value = self.attempt(split, where, convert, record)`` (``None`` when the record was skipped) or wrap a block
that only records things in ``with self.skipping(split, where):``, so that a bad record is counted and
skipped (or raised in strict mode), and call :meth:`make_row` to get a row in the schema.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import datasets

from builders.schema import FEATURES, validate
from builders.storage.report import BuildReport, Built, Params


class RegionBuilderConfig(datasets.BuilderConfig):
    """Options shared by every source: where the raw release is, the seed, strictness, source options."""

    def __init__(self, raw_root: str | None = None, seed: int = 0, strict: bool = False,
                 options: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.raw_root = raw_root
        self.seed = seed
        self.strict = strict
        self.options = dict(options or {})


class RegionBuilder(datasets.GeneratorBasedBuilder):
    """Raw release -> spatial-instruction rows. See the module docstring for the contract."""

    SOURCE: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""
    CITATION: ClassVar[str] = ""
    LICENSE: ClassVar[str] = ""
    DEFAULT_OPTIONS: ClassVar[dict[str, Any]] = {}
    BUILDER_CONFIG_CLASS = RegionBuilderConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not self.config.raw_root:
            raise ValueError(f"{type(self).__name__} needs raw_root=<folder with the original release>")
        self.raw_root = Path(self.config.raw_root)
        if not self.raw_root.is_dir():
            raise FileNotFoundError(f"raw_root {self.raw_root} is not a folder")
        unknown = set(self.config.options) - set(self.DEFAULT_OPTIONS)
        if unknown:
            raise ValueError(f"{self.SOURCE}: unknown options {sorted(unknown)}; known: {sorted(self.DEFAULT_OPTIONS)}")
        self.options = {**self.DEFAULT_OPTIONS, **self.config.options}
        self.seed = self.config.seed
        self.report = BuildReport(source=self.SOURCE, seed=self.seed, strict=self.config.strict,
                                  options=self.options)

    # ----- what subclasses implement -------------------------------------------------------------------
    def available_splits(self) -> list[str]:
        """The schema split names whose raw files exist under ``raw_root``."""
        raise NotImplementedError

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        """Yield the schema rows of ``split``, in a deterministic order."""
        raise NotImplementedError

    # ----- helpers for subclasses ------------------------------------------------------------------------
    def skipping(self, split: str, where: str) -> contextlib.AbstractContextManager[None]:
        """``with self.skipping(split, where):`` counts a :class:`SkipRecord` raised inside as a skip."""
        return self.report.skipping(split, where)

    def attempt(self, split: str, where: str, build: Callable[Params, Built], /, *args: Params.args,
                **kwargs: Params.kwargs) -> Built | None:
        """``build(*args, **kwargs)``, or ``None`` after counting its :class:`SkipRecord` as a skip of ``where``."""
        return self.report.attempt(split, where, build, *args, **kwargs)

    def make_row(self, *, key: str, split: str, task: str, image: str, image_id: str, width: int, height: int,
                 regions: list[dict[str, Any]], conversations: list[dict[str, str]], variant: str = "",
                 choices: list[str] | None = None, label: int = -1, references: list[str] | None = None,
                 meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """A schema row with the id ``<source>:<split>:<key>``; fields in the schema's order."""
        return {
            "id": f"{self.SOURCE}:{split}:{key}",
            "source": self.SOURCE,
            "variant": variant,
            "task": task,
            "split": split,
            "image": image,
            "image_id": str(image_id),
            "width": int(width),
            "height": int(height),
            "regions": regions,
            "conversations": conversations,
            "choices": list(choices or []),
            "label": int(label),
            "references": list(references or []),
            "meta": json.dumps(meta or {}, sort_keys=True, ensure_ascii=False),
        }

    # ----- datasets.GeneratorBasedBuilder ------------------------------------------------------------------
    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=self.DESCRIPTION, features=FEATURES, citation=self.CITATION,
                                    license=self.LICENSE)

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split})
                for split in self.available_splits()]

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for row in self.validated_rows(split):
            yield row["id"], row

    def validated_rows(self, split: str) -> Iterator[dict[str, Any]]:
        """:meth:`iter_rows` with every row validated and counted in the report."""
        for row in self.iter_rows(split):
            validate(row)
            self.report.count_row(row)
            yield row


def region(bbox: list[float], *, label: str = "", source_id: Any = "", segmentation: Any = None) -> dict[str, Any]:
    """One entry of a row's ``regions``; ``segmentation`` (COCO polygons or RLE) is stored as JSON."""
    return {
        "bbox": [float(v) for v in bbox],
        "segmentation": "" if segmentation in (None, "", []) else json.dumps(segmentation, separators=(",", ":")),
        "label": label,
        "source_id": str(source_id),
    }


def turn(role: str, value: str) -> dict[str, str]:
    return {"from": role, "value": value}
