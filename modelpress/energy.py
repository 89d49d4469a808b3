"""Energy from real meters only: Linux powercap RAPL on CPUs. Where no meter is readable the value is
``None`` with the reason; modelpress never estimates energy silently."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


class EnergyMeter:
    """Joules from a real meter: Linux powercap RAPL (CPU package) where readable. ``None`` otherwise,
    with the reason in ``why``; never an estimate."""

    ROOT = Path("/sys/class/powercap")

    def __init__(self) -> None:
        self.files = sorted(self.ROOT.glob("intel-rapl:[0-9]*/energy_uj")) if self.ROOT.exists() else []
        self.why = ""
        if not self.ROOT.exists():
            self.why = "no RAPL powercap interface on this machine (/sys/class/powercap is absent)"
        elif not self.files:
            self.why = "no RAPL package domain under /sys/class/powercap"
        else:
            try:
                self._read()
            except OSError as e:
                self.why, self.files = f"RAPL counters are not readable ({e.strerror}); run as root", []

    @property
    def available(self) -> bool:
        return bool(self.files)

    def _read(self) -> float:
        return sum(int(f.read_text()) for f in self.files) / 1e6

    def measure(self, fn: Callable[[], Any], repeats: int) -> float | None:
        """Joules per call of ``fn`` (averaged over ``repeats`` calls), or None without a meter."""
        if not self.available:
            return None
        start = self._read()
        for _ in range(repeats):
            fn()
        used = self._read() - start
        return used / repeats if used > 0 else None
