"""The build report: what was read, written and skipped, and why (docs/design.md#errors-and-reports)."""

from __future__ import annotations

import contextlib
import hashlib
import platform
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from builders.errors import SkipRecord, StrictModeError

EXAMPLES_PER_REASON = 5
BUILD_PACKAGES = ("gpt4roi-suite", "datasets", "pyarrow", "ijson", "orjson", "pycocotools")
Params = ParamSpec("Params")
Built = TypeVar("Built")


def file_fingerprint(path: Path, chunk: int = 1 << 22) -> dict[str, Any]:
    """Size and sha256 of an input file (streamed: release files reach several hundred MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def package_versions(names: tuple[str, ...] = BUILD_PACKAGES) -> dict[str, str]:
    """Python's version and each installed distribution's, recorded in reports for reproducibility."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class BuildReport:
    """Counts per split, task and skip reason; collected while a builder streams its rows."""

    source: str
    seed: int = 0
    strict: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    written: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    regions: Counter = field(default_factory=Counter)
    skipped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    skip_examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def add_input(self, path: str | Path) -> None:
        """Record an input file (size and sha256) once, however often the builder opens it."""
        path = Path(path)
        key = str(path)
        if key not in self.inputs and path.is_file():
            self.inputs[key] = file_fingerprint(path)

    def skip(self, split: str, error: SkipRecord, where: str) -> None:
        """Count a skipped record, or raise when the build is strict."""
        if self.strict:
            raise StrictModeError(f"{where}: {error} (strict=true turns skips into errors)") from error
        self.skipped[split][error.reason] += 1
        examples = self.skip_examples[error.reason]
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{where}: {error.detail}" if error.detail else where)

    @contextlib.contextmanager
    def skipping(self, split: str, where: str) -> Iterator[None]:
        """Count a :class:`SkipRecord` raised inside the block as a skip of ``where`` (or raise if strict)."""
        try:
            yield
        except SkipRecord as error:
            self.skip(split, error, where)

    def attempt(self, split: str, where: str, build: Callable[Params, Built], /, *args: Params.args,
                **kwargs: Params.kwargs) -> Built | None:
        """``build(*args, **kwargs)``, or ``None`` once the :class:`SkipRecord` it raised is counted as a skip
        of ``where`` (or raised if strict): the caller moves on to its next record when it gets ``None``, so
        ``build`` itself never returns ``None``."""
        with self.skipping(split, where):
            return build(*args, **kwargs)
        return None

    def merge(self, other: BuildReport) -> None:
        """Add the counts, skip examples and inputs of ``other`` (a worker's share of the same build), in order.

        Merging the workers' reports in the order of their work gives the counts of a one-process build.
        """
        for split, tasks in other.written.items():
            self.written[split].update(tasks)
        self.regions.update(other.regions)
        for split, reasons in other.skipped.items():
            self.skipped[split].update(reasons)
        for reason, examples in other.skip_examples.items():
            kept = self.skip_examples[reason]
            kept.extend(examples[:EXAMPLES_PER_REASON - len(kept)])
        for key, value in other.inputs.items():
            self.inputs.setdefault(key, value)

    def count_row(self, row: dict[str, Any]) -> None:
        self.written[row["split"]][row["task"]] += 1
        self.regions[row["split"]] += len(row["regions"])

    @property
    def total_rows(self) -> int:
        return sum(sum(tasks.values()) for tasks in self.written.values())

    @property
    def total_skipped(self) -> int:
        return sum(sum(reasons.values()) for reasons in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "seed": self.seed,
            "strict": self.strict,
            "options": self.options,
            "rows_written": {split: dict(sorted(tasks.items())) for split, tasks in sorted(self.written.items())},
            "regions_written": dict(sorted(self.regions.items())),
            "rows_skipped": {split: dict(sorted(r.items())) for split, r in sorted(self.skipped.items())},
            "skip_examples": dict(sorted(self.skip_examples.items())),
            "total_rows": self.total_rows,
            "total_skipped": self.total_skipped,
            "inputs": sorted(self.inputs.values(), key=lambda item: item["path"]),
            "seconds": round(self.seconds, 3),
            "versions": package_versions(),
        }
