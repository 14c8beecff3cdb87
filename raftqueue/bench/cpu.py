"""CPU time spent per job: a figure that a busy or quiet shared machine changes less than jobs/s.

On a 2-core machine that runs three nodes and the load generator, jobs/s is the two cores divided by what one
job costs all processes together. So the bench also prints that cost: CPU milliseconds per job used by the
nodes (user + system, read from /proc) and by the load generator (this process), over a scenario's window.
A target of N jobs/s on C cores needs the sum to stay under C * 1000 / N ms.
"""
from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (all its threads); NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of proc(5))


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores summed, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return (total - idle) / _TICKS, total / _TICKS


class CpuMeter:
    """Measures the CPU used by some node processes and by this process between `start()` and `stop()`."""

    def __init__(self, node_pids: list[int]) -> None:
        self.node_pids = node_pids
        self._nodes0: list[float] = []
        self._self0 = 0.0
        self._machine0 = (0.0, 0.0)
        self._wall0 = 0.0

    def start(self) -> None:
        self._nodes0 = [process_cpu_s(pid) for pid in self.node_pids]
        self._self0 = time.process_time()
        self._machine0 = machine_busy_s()
        self._wall0 = time.monotonic()

    def stop(self, jobs: int) -> dict:
        """Figures for the window: CPU ms per job (nodes, load generator) and how busy each side and the machine
        were, in per cent of one core (200% is all of a 2-core machine)."""
        wall = max(time.monotonic() - self._wall0, 1e-9)
        nodes = [process_cpu_s(pid) - before for pid, before in zip(self.node_pids, self._nodes0)]
        load = time.process_time() - self._self0
        busy, total = (now - before for now, before in zip(machine_busy_s(), self._machine0))
        cores = os.cpu_count() or 1
        out = {"load_generator_cpu_ms_per_job": round(1000 * load / jobs, 3) if jobs else None,
               "load_generator_cpu_pct": round(100 * load / wall),
               "machine_busy_pct": round(100 * cores * busy / total) if total else None}
        if self.node_pids:
            used = sum(nodes)
            out["nodes_cpu_ms_per_job"] = round(1000 * used / jobs, 3) if jobs else None
            out["nodes_cpu_pct"] = [round(100 * n / wall) for n in nodes]
        return out
