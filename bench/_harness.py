"""What every benchmark measures around its runs: how busy the machine was, and peak memory.

Shared by the benchmarks (``make bench`` runs ``bench/[!_]*.py``, so this file is not one).
"""

from __future__ import annotations

import os
from pathlib import Path


def machine_busy() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``), else None.

    Sampled before and after a measurement, the difference minus this benchmark's own CPU time is
    the share other processes took: a ratio measured while others used the CPU says so.
    """
    try:
        fields = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:9]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float | None:
    """This process's peak RSS since it started (``VmHWM``; unlike ``ru_maxrss`` it is reset by exec)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return None if line is None else int(line.split()[1]) / 1024


def _own_cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class OtherLoad:
    """The share of the machine's CPU that other processes used from creation to ``share()``.

    This benchmark's own CPU (its process and its children) is subtracted; None off Linux.
    """

    def __init__(self) -> None:
        import time

        self._busy, self._own, self._wall = machine_busy(), _own_cpu_seconds(), time.perf_counter()

    def share(self, detached_cpu: float = 0.0) -> float | None:
        """The share so far; ``detached_cpu``: CPU seconds of this benchmark's processes that are not
        its waited-for children (a stack started in new sessions), which count as its own too."""
        import time

        busy = machine_busy()
        if busy is None or self._busy is None:
            return None
        others = (busy - self._busy) - (_own_cpu_seconds() - self._own) - detached_cpu
        return max(0.0, others / ((time.perf_counter() - self._wall) * (os.cpu_count() or 1)))
