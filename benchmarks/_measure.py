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
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).parent / "scratch"


def measure(args: list[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks._child <args>``: its JSON result (with ``peak_rss_mb``), ``seconds``, ``cpu_seconds``.

    ``cpu_seconds`` includes the child's own worker processes (reaped before it exits). For a child that
    starts workers, ``peak_rss_tree_mb`` is the largest RSS summed over it and its descendants (sampled every
    0.1 s) and ``peak_rss_sum_mb`` the sum of each process's own high-water mark (an upper bound).
    """
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "benchmarks._child", *args], stdout=subprocess.PIPE,
                             cwd=Path(__file__).parent.parent, text=True)
    sampler = _TreeSampler(child.pid)
    sampler.start()
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    sampler.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    tree = {}
    if len(sampler.high_water) > 1:  # the child had processes of its own
        tree = {"processes": len(sampler.high_water), "peak_rss_tree_mb": round(sampler.peak_sum / 1024, 1),
                "peak_rss_sum_mb": round(sum(sampler.high_water.values()) / 1024, 1)}
    return {**result, **tree, "seconds": round(seconds, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}


class _TreeSampler(threading.Thread):
    """Samples the RSS (and high-water mark) of a process and all its descendants, in KiB, until stopped."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_sum = 0
        self.high_water: dict[int, int] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            total = 0
            for pid in self._tree():
                rss, hwm = _status_kib(pid)
                total += rss
                self.high_water[pid] = max(self.high_water.get(pid, 0), hwm)
            self.peak_sum = max(self.peak_sum, total)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def _tree(self) -> list[int]:
        found, queue = [], [self.pid]
        while queue:
            pid = queue.pop()
            found.append(pid)
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    queue.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
        return found


def _status_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB; zeros once it is gone."""
    values = {"VmRSS:": 0, "VmHWM:": 0}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key = line.split(None, 1)[0]
                if key in values:
                    values[key] = int(line.split()[1])
    except OSError:
        pass
    return values["VmRSS:"], values["VmHWM:"]


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


def machine_with_load(load_before: float) -> dict[str, Any]:
    """:func:`machine` plus the 1-minute load average before and after the measurement (the machine is shared)."""
    return {**machine(), "load_average_1m_before": round(load_before, 2),
            "load_average_1m_after": round(os.getloadavg()[0], 2)}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
