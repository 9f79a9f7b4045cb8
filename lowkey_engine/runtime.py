"""How the engine's process uses the CPU: as many torch threads as there are idle cores when a photo
starts, measured then and there.

torch's OpenMP threads spin while they wait for work. On a machine whose cores are busy with other
programs (a laptop building, a browser with many tabs) threads beyond the idle cores fight those
programs and each other: on a 2-core machine whose cores two other programs kept busy, a `fast`
photo took 53 s with torch's default (a thread per core) against 5.2 s with one thread, and one
thread costs 1.4x on the quiet machine. Following the idle cores was within 1.03x of the best
policy quiet and 1.23x busy (`benchmarks/thread_policy.py`, results in benchmarks/README.md).
The `lowkey` command and the daemon call `use_idle_cores()` before each photo; a library caller
decides for itself (the engine never changes the process's threads).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: Where Linux keeps the CPU time counters (the first line sums all cores).
PROC_STAT = Path("/proc/stat")
#: How long the idle cores are measured before a photo, seconds.
IDLE_SAMPLE_SECONDS = 0.1
#: /proc/stat's cpu line: fields 4 and 5 (idle, iowait) are time a core had nothing to run.
_IDLE_FIELDS = (3, 4)


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) clock ticks of all cores since boot; None where /proc/stat is not there."""
    try:
        fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[i] for i in _IDLE_FIELDS if i < len(fields)), sum(fields)


def idle_cores(sample_seconds: float = IDLE_SAMPLE_SECONDS) -> float:
    """How many cores were idle over the last `sample_seconds` (Linux), or, elsewhere, the cores
    less the one-minute load average; in [0, cores]."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is None:
        return max(0.0, cores - os.getloadavg()[0]) if hasattr(os, "getloadavg") else float(cores)
    time.sleep(sample_seconds)
    after = _cpu_times()
    idle, total = after[0] - before[0], after[1] - before[1]
    return cores * idle / total if total > 0 else float(cores)


def threads_for_next_photo(idle: float | None = None, cores: int | None = None) -> int:
    """torch threads for the next photo: the idle cores, rounded, at least 1 and at most the cores."""
    cores = cores or os.cpu_count() or 1
    idle = idle_cores() if idle is None else idle
    return max(1, min(cores, round(idle)))


def use_idle_cores() -> int:
    """Set torch's thread count for the next photo (`threads_for_next_photo`); returns it."""
    import torch

    threads = threads_for_next_photo()
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads
