"""Safe resolution of annotation-supplied paths under the raw root."""

from __future__ import annotations

from pathlib import Path

from builders.errors import SkipRecord


def resolve_under(root: str | Path, relative: str) -> Path:
    """``root / relative``, refused (as a skipped record) when it would leave ``root``.

    Annotation files name their images; a crafted file could name ``../../etc/passwd`` or an absolute path.
    Symlinks are resolved before the check.
    """
    root_path = Path(root).resolve()
    if not relative or "\x00" in relative:
        raise SkipRecord("unsafe_image_path", f"empty or NUL-containing path {relative!r}")
    candidate = (root_path / relative).resolve()
    if candidate != root_path and root_path not in candidate.parents:
        raise SkipRecord("unsafe_image_path", f"{relative!r} escapes the raw root {root_path}")
    return candidate


def relative_image_path(root: str | Path, relative: str) -> str:
    """The checked path of an image, as stored in the schema: relative to the raw root, POSIX separators."""
    return resolve_under(root, relative).relative_to(Path(root).resolve()).as_posix()
