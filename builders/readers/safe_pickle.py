"""A restricted unpickler for the RefCOCO ``refs(*).p`` files and detection pickles.

``pickle.load`` on a downloaded file runs whatever the file tells it to. The refer pickles only hold lists,
dicts, strings and numbers (and the GPT4RoI detection pickle numpy arrays), so anything else is refused
before it is constructed — a payload that would call ``os.system`` is never executed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from builders.errors import SourceFileError

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_BUILTIN_GLOBALS = {("builtins", name) for name in ("set", "frozenset", "complex", "slice")} | {
    ("__builtin__", name) for name in ("set", "frozenset", "complex")
} | {("collections", "OrderedDict")}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, *, allow_numpy: bool, path: str):
        super().__init__(file, encoding="latin1")
        self._allowed = _BUILTIN_GLOBALS | (_NUMPY_GLOBALS if allow_numpy else set())
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._allowed:
            raise SourceFileError(
                self._path,
                f"refused to load global {module}.{name}: the pickle asks to construct or call it",
                expected="only lists, dicts, strings, numbers" + (" and numpy arrays" if self._allowed & _NUMPY_GLOBALS else ""),
            )
        return super().find_class(module, name)


def safe_load_pickle(path: str | Path, *, allow_numpy: bool = False) -> Any:
    """Load a pickle that may only contain plain containers, numbers, strings (and numpy arrays)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return _RestrictedUnpickler(handle, allow_numpy=allow_numpy, path=str(path)).load()
    except SourceFileError:
        raise
    except FileNotFoundError as exc:
        raise SourceFileError(path, "file not found") from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise SourceFileError(path, f"not a readable pickle ({type(exc).__name__}: {exc})") from exc
