"""Errors raised while reading raw releases.

Two kinds of failure exist in a build (docs/design.md#errors-and-reports):

* ``SourceFileError`` — a whole input file cannot be read (truncated JSON, wrong top-level type, an unsafe
  pickle, a path escaping the raw root). The build stops and the message names the file, the position and
  what was expected.
* ``SkipRecord`` — one record is unusable (a zero-size box, a reference to a missing object). The builder
  skips it, the build report counts it under ``reason``, and ``strict=true`` turns it into an error.
"""

from __future__ import annotations


class BuildError(Exception):
    """Base class of every error a builder raises on purpose."""


class SourceFileError(BuildError):
    """A raw input file cannot be read at all."""

    def __init__(self, path: object, problem: str, *, position: str | None = None, expected: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.position = position
        self.expected = expected
        parts = [f"{self.path}"]
        if position:
            parts.append(f"at {position}")
        message = " ".join(parts) + f": {problem}"
        if expected:
            message += f" (expected {expected})"
        super().__init__(message)


class SkipRecord(BuildError):
    """One record cannot be converted; counted under ``reason`` in the build report."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class BuildRejected(BuildError):
    """A split kept no rows or skipped too many records: the inputs, not single records, are wrong."""


class StrictModeError(BuildError):
    """Raised instead of skipping when a build runs with ``strict=true``."""


class SchemaError(BuildError):
    """A row breaks a rule of the spatial-instruction schema (docs/design.md#row-rules)."""

    def __init__(self, row_id: object, rule: str, detail: str = ""):
        self.row_id = row_id
        self.rule = rule
        message = f"row {row_id!r} breaks schema rule '{rule}'"
        if detail:
            message += f": {detail}"
        super().__init__(message)
