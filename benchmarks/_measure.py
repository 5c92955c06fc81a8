"""Run a command in a child process and measure its wall time and peak resident memory.

The child reports its results as one JSON line on stdout, including its own peak RSS read from
``/proc/self/status`` (``VmHWM``) just before it exits: the high-water mark of its address space since
``exec``. (``ru_maxrss`` of a forked child is no good here: Linux carries the parent's RSS at fork time into
it, so a parent that imported pyarrow would make every child look at least that big.) CPU time (user +
system, from ``os.wait4``) is reported beside wall time because the machine may be shared.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "scratch"


def measure(args: list[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks._child <args>``: its JSON result (with ``peak_rss_mb``), ``seconds``, ``cpu_seconds``."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "benchmarks._child", *args], stdout=subprocess.PIPE,
                             cwd=Path(__file__).parent.parent, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    memory_gb = None
    try:
        with open("/proc/meminfo") as handle:
            memory_gb = round(int(handle.readline().split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "memory_gb": memory_gb, "python": platform.python_version(),
            "platform": platform.platform()}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
