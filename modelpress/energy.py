"""Energy from real meters only: Linux powercap RAPL on CPUs, NVML on NVIDIA GPUs. Where no meter is
readable the value is ``None`` with the reason; modelpress never estimates energy silently.

>>> meter = EnergyMeter("cpu")
>>> meter.available or bool(meter.why)
True
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class EnergyMeter:
    """Joules from a real meter: RAPL (CPU packages) for ``device="cpu"``, NVML (the whole GPU board) for
    ``device="cuda"``. ``None`` otherwise, with the reason in ``why``; never an estimate.

    Both count everything the package or board draws while ``fn`` runs, idle power included: compare
    candidates measured the same way on the same machine, not against other machines.
    """

    ROOT = Path("/sys/class/powercap")

    def __init__(self, device: str = "cpu", gpu_index: int = 0) -> None:
        self.device = device
        self.files: list[Path] = []
        self._nvml: Any = None
        self.why = ""
        if device == "cuda":
            self._init_nvml(gpu_index)
        else:
            self._init_rapl()

    @property
    def kind(self) -> str | None:
        """'RAPL', 'NVML' or None."""
        if self.files:
            return "RAPL"
        return "NVML" if self._nvml is not None else None

    @property
    def available(self) -> bool:
        return self.kind is not None

    def _init_rapl(self) -> None:
        # Package domains only (intel-rapl:N, also used by AMD's driver); sub-domains (intel-rapl:N:M)
        # are parts of a package and would count twice.
        self.files = sorted(self.ROOT.glob("intel-rapl:[0-9]*/energy_uj")) if self.ROOT.exists() else []
        self.files = [f for f in self.files if f.parent.name.count(":") == 1]
        if not self.ROOT.exists():
            self.why = "no RAPL powercap interface on this machine (/sys/class/powercap is absent)"
        elif not self.files:
            self.why = "no RAPL package domain under /sys/class/powercap"
        else:
            try:
                self._read()
            except OSError as e:
                self.why, self.files = f"RAPL counters are not readable ({e.strerror}); run as root", []

    def _init_nvml(self, index: int) -> None:
        try:
            import pynvml
        except ImportError:
            self.why = "NVML needs the 'pynvml' module: install it with 'pip install nvidia-ml-py'"
            return
        try:
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # Volta and newer only
        except Exception as e:  # pynvml.NVMLError: no driver, no GPU, or no energy counter
            self.why = f"NVML cannot read GPU {index}'s energy counter ({e})"
            return
        self._nvml = (pynvml, handle)

    def _read(self) -> float:
        """The meter's running total in joules."""
        if self._nvml is not None:
            pynvml, handle = self._nvml
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # millijoules
        return sum(int(f.read_text()) for f in self.files) / 1e6  # microjoules

    def measure(self, fn: Callable[[], Any], repeats: int, min_seconds: float | None = None) -> float | None:
        """Joules per call of ``fn``, averaged over at least ``repeats`` calls and ``min_seconds`` of running
        (NVML's counter advances in coarse steps: 1 s by default there), or None without a meter."""
        if not self.available:
            return None
        if min_seconds is None:
            min_seconds = 1.0 if self.kind == "NVML" else 0.0
        start, t0, calls = self._read(), time.perf_counter(), 0
        while calls < repeats or time.perf_counter() - t0 < min_seconds:
            fn()
            calls += 1
        used = self._read() - start
        return used / calls if used > 0 else None
