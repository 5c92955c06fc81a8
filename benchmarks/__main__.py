"""``python -m benchmarks [name ...] [-- benchmark args]``: run every benchmark, or the ones named."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    """Benchmark modules: every ``benchmarks/<name>.py`` not starting with an underscore."""
    return sorted(info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if not info.name.startswith("_"))


def main(argv: list[str]) -> int:
    names, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    known = available()
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(known)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or known:
        print(f"=== benchmark {name}")
        status |= importlib.import_module(f"benchmarks.{name}").main(extra)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
