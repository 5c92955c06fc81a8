"""Safe resolution of annotation-supplied paths under the raw root.

The check is lexical: a path named by an annotation file may not be absolute and may not climb out of the
raw root with ``..``. Symlinks are *not* resolved before the check, because they are the user's own layout:
GPT4RoI's README tells users to "soft link" their COCO and Visual Genome image folders into the data folder,
and a link ``train2017 -> /disk2/coco/train2017`` must be followed, not counted as an escape. Only the
annotation's text is untrusted; the folder the user built is not.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from builders.errors import SkipRecord


def relative_image_path(relative: str) -> str:
    """The checked path of an image as stored in the schema: ``relative`` normalised (``a/./b`` -> ``a/b``), or a :class:`SkipRecord` when it would leave its root.

    Refused: empty, NUL-containing, absolute (``/etc/passwd``) and climbing (``../x``, ``a/../../x``) paths.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise SkipRecord("unsafe_image_path", f"empty, non-string or NUL-containing path {relative!r}")
    if relative.startswith("/"):
        raise SkipRecord("unsafe_image_path", f"{relative!r} is absolute, expected a path under the raw root")
    normal = posixpath.normpath(relative)
    if normal == ".." or normal.startswith("../"):
        raise SkipRecord("unsafe_image_path", f"{relative!r} climbs out of the raw root with '..'")
    if normal == ".":
        raise SkipRecord("unsafe_image_path", f"{relative!r} names the raw root itself, not a file")
    return normal


def resolve_under(root: str | Path, relative: str) -> Path:
    """``root / relative`` after the lexical check of :func:`relative_image_path`; symlinks inside are followed."""
    return Path(root) / relative_image_path(relative)




def image_exists(root: str | Path, relative: str) -> bool:
    """Whether the checked image path names a file: one ``stat`` (symlinks followed), no decode."""
    return os.path.isfile(os.path.join(str(root), relative))
