"""Readers for /proc, so CPU and memory figures come from the kernel, not from the processes.

CPU is counted in clock ticks (usually 10 ms), which is why the harness reports it as a
share of the measured window rather than as a per-op cost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in ticks; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0
    # The command name may contain spaces or parentheses; fields resume after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    # Fields after the name start at field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def vm_rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, as ``VmRSS`` in /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass(frozen=True)
class MachineTicks:
    """Whole-machine ticks from the first line of /proc/stat.

    ``irq`` (hard + soft interrupts) is kept apart because loopback TCP work runs there and
    is charged to no process; without it the "other processes" figure would look alarming.
    """

    busy: int
    irq: int
    total: int

    @staticmethod
    def read() -> MachineTicks:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
        irq = sum(parts[5:7])
        total = sum(parts[:8])  # guest time is already inside user/nice
        return MachineTicks(busy=total - idle, irq=irq, total=total)


class CpuWindow:
    """CPU used by a set of processes between ``start()`` and ``stop()``.

    Shares are in per cent of one core, the way ``top`` shows them, so on this 2-core
    machine a figure near 100 means the process was saturating a core.
    """

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self._start: dict[str, int] = {}
        self._machine0 = MachineTicks(0, 0, 0)
        self._t0 = 0.0
        self.shares: dict[str, float] = {}
        self.machine_busy_pct = 0.0
        self.irq_pct = 0.0

    def _sample(self) -> dict[str, int]:
        return {name: sum(cpu_ticks(p) for p in pids) for name, pids in self.pids.items()}

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine0 = MachineTicks.read()
        self._start = self._sample()

    def stop(self) -> None:
        end = self._sample()
        machine = MachineTicks.read()
        window_s = max(time.monotonic() - self._t0, 1e-6)
        self.shares = {
            name: 100.0 * (end[name] - self._start[name]) / CLK_TCK / window_s for name in end
        }
        total = machine.total - self._machine0.total
        ncpu = os.cpu_count() or 1
        if total > 0:
            self.machine_busy_pct = 100.0 * ncpu * (machine.busy - self._machine0.busy) / total
            self.irq_pct = 100.0 * ncpu * (machine.irq - self._machine0.irq) / total

    @property
    def others_pct(self) -> float:
        """CPU of everything else: busy minus interrupts minus the watched processes."""
        return max(0.0, self.machine_busy_pct - self.irq_pct - sum(self.shares.values()))
