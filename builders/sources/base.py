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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import datasets

from builders.errors import BuildRejected, SchemaError, SkipRecord
from builders.limits import check_row_text
from builders.readers.paths import image_exists
from builders.schema import FEATURES, validate
from builders.storage.report import BuildReport, Built, Params

# Options every source understands, besides its own DEFAULT_OPTIONS (docs/design.md#errors-and-reports):
# ``check_images`` stats every row's image (a missing one is the counted skip ``image_missing``), and a split
# whose skipped records exceed ``max_skip_share`` of all its records (rows kept + records skipped) stops the
# build: that many skips mean a file-level problem (a wrong ``image_dir``, the wrong file), not bad records.
BASE_OPTIONS: dict[str, Any] = {"check_images": True, "max_skip_share": 0.5}


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
        defaults = {**BASE_OPTIONS, **self.DEFAULT_OPTIONS}
        unknown = set(self.config.options) - set(defaults)
        if unknown:
            raise ValueError(f"{self.SOURCE}: unknown options {sorted(unknown)}; known: {sorted(defaults)}")
        self.options = {**defaults, **self.config.options}
        share = self.options["max_skip_share"]
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ValueError(f"{self.SOURCE}: max_skip_share must be a number in [0, 1], got {share!r}")
        self._images_seen: dict[str, bool] = {}
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

    # ----- parallel builds (``gpt4roi build num_proc=N``, builders/workers.py) ------------------------------
    def work_units(self, split: str) -> Iterator[Any]:
        """``split`` as picklable units of independent work, in row order.

        Units are read in the main process (which keeps any state that spans records, such as duplicate ids)
        and turned into checked, encoded rows by worker processes, each with its own builder and report. By
        default every row of :meth:`iter_rows` is its own unit, so workers only check and encode; a builder
        that overrides this (Visual Genome) moves its per-record conversion into the workers too, and promises
        ``iter_rows(split)`` == the rows of :meth:`unit_rows` over its units, in order.
        """
        return self.iter_rows(split)

    def unit_rows(self, split: str, unit: Any) -> Iterable[dict[str, Any]]:
        """The rows of one unit of :meth:`work_units`; runs in a worker process."""
        return (unit,)

    def json_units(self) -> bool:
        """Whether every unit is a JSON value as read from a JSON file (dicts, lists, strings, finite numbers):
        such units travel to the workers as JSON, several times cheaper than pickle, tuples arriving as lists."""
        return False

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
                 meta: dict[str, Any] | str | None = None) -> dict[str, Any]:
        """A schema row with the id ``<source>:<split>:<key>``; fields in the schema's order.

        ``meta`` is a dict, or its :func:`meta_json` text when several rows share it (encoded once).
        """
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
            "meta": meta if isinstance(meta, str) else meta_json(meta),
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
        """:meth:`iter_rows` with every row checked (a bad one is a counted skip) and counted in the report.

        When the split is exhausted, a split without rows, or with more skips than ``max_skip_share`` allows,
        raises :class:`~builders.errors.BuildRejected` with the reasons and counts.
        """
        yield from self.checked_rows(split, self.iter_rows(split))
        self.check_outcome(split)

    def checked_rows(self, split: str, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """``rows`` that pass the row checks, counted in the report; a bad one is a counted skip.

        Per row of a 400 k-row build: the skip's location is only formatted for a row that is skipped.
        """
        for row in rows:
            try:
                self._check_row(row)
            except SkipRecord as error:
                self.report.skip(split, error, f"row {row.get('id')!r}")
                continue
            self.report.count_row(row)
            yield row

    def _check_row(self, row: dict[str, Any]) -> None:
        """Schema rules, writable text and an existing image; any failure is a :class:`SkipRecord`.

        A record's own text can break a schema rule (an ``<image>`` or ``<region3>`` written inside a caption):
        that is one bad record, so it is skipped under ``schema_<rule>`` instead of aborting the build.
        """
        check_row_text(row)
        try:
            validate(row)
        except SchemaError as error:
            raise SkipRecord(f"schema_{error.rule}", str(error)) from error
        image = row["image"]
        if self.options["check_images"] and isinstance(image, str):
            if image not in self._images_seen:
                self._images_seen[image] = image_exists(self.raw_root, image)
            if not self._images_seen[image]:
                raise SkipRecord("image_missing", f"{image} not found under {self.raw_root} "
                                                  "(check image_dir, or check_images=false for annotations only)")

    def check_outcome(self, split: str) -> None:
        """Refuse a split whose skips exceed ``max_skip_share`` of its records, or that held no record at all.

        A split whose every record was skipped has a share of 1, refused unless ``max_skip_share=1``.
        """
        rows = sum(self.report.written.get(split, {}).values())
        skipped = self.report.skipped.get(split, {})
        total_skipped = sum(skipped.values())
        share = total_skipped / (rows + total_skipped) if rows + total_skipped else 1.0
        if (rows or total_skipped) and share <= self.options["max_skip_share"]:
            return
        problem = "kept no rows" if not rows else (f"skipped {total_skipped} of {rows + total_skipped} records "
                                                   f"({share:.0%} > max_skip_share={self.options['max_skip_share']})")
        reasons = "; ".join(f"{reason}: {count} (e.g. {self.report.skip_examples.get(reason, ['?'])[0]})"
                            for reason, count in sorted(skipped.items(), key=lambda item: -item[1]))
        raise BuildRejected(f"{self.SOURCE}/{split} {problem}; skips by reason: {reasons or 'none'}. "
                            f"Inputs: {', '.join(sorted(self.report.inputs)) or 'none recorded'}")


def meta_json(meta: dict[str, Any] | None) -> str:
    """The ``meta`` column's text of a dict: sorted keys, non-ASCII kept."""
    return json.dumps(meta or {}, sort_keys=True, ensure_ascii=False)


def region(bbox: list[float], *, label: str = "", source_id: Any = "", segmentation: Any = None) -> dict[str, Any]:
    """One entry of a row's ``regions``; ``segmentation`` (COCO polygons or RLE) is stored as JSON."""
    return {
        "bbox": list(map(float, bbox)),
        "segmentation": "" if segmentation in (None, "", []) else json.dumps(segmentation, separators=(",", ":")),
        "label": label,
        "source_id": str(source_id),
    }


def turn(role: str, value: str) -> dict[str, str]:
    return {"from": role, "value": value}
