"""Calibration observers: stream activation batches in, get a clipping range ``(lo, hi)`` out.

Every observer keeps a fixed amount of state (a running min/max, or a histogram of ``bins`` counts), so
memory does not grow with the number of calibration samples. Methods:

- ``minmax``: the smallest and largest value seen.
- ``percentile``: the ``percentile``-th and ``100 - percentile``-th percentiles (outliers are clipped).
- ``mse``: the range whose uniform quantization has the least expected squared error.
- ``entropy``: the range whose quantized distribution is closest (Kullback-Leibler) to the original one.

>>> obs = make_observer("minmax")
>>> obs.update(np.array([-1.0, 0.5, 2.0], np.float32), "x")
>>> obs.range()
(-1.0, 2.0)
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import ModelpressError

Method = Literal["minmax", "percentile", "mse", "entropy"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "mse", "entropy")
BINS = 2048  # histogram resolution; the histogram range doubles (merging bin pairs) when data falls outside


def check_finite(values: np.ndarray, where: str) -> None:
    """Refuse NaN or Inf in a calibration tensor, naming the tensor (and the layer it feeds)."""
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ModelpressError(
            f"The activation {where} holds {bad} NaN or Inf value(s) on the calibration data, so no quantization "
            f"range exists for it. Check the model's weights and the calibration inputs (no NaN/Inf, same "
            f"preprocessing as training), or exclude that layer from quantization."
        )


class MinMaxObserver:
    """Running minimum and maximum."""

    def __init__(self) -> None:
        self.lo, self.hi, self.count = np.inf, -np.inf, 0

    def update(self, values: np.ndarray, where: str = "tensor") -> None:
        values = np.asarray(values)
        if values.size == 0:
            return
        check_finite(values, where)
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))
        self.count += values.size

    def range(self) -> tuple[float, float]:
        if self.count == 0:
            raise ModelpressError("An observer saw no values: the calibration data is empty.")
        return self.lo, self.hi


class HistogramObserver(MinMaxObserver):
    """A fixed-size histogram whose range grows by doubling (bin pairs merge exactly), so streaming
    batches in any order gives the same counts as one pass over all data at the final resolution.

    Exact zeros (ReLU outputs, padding) are counted apart: zero is exactly representable in every range,
    so it costs no error, and a spike of zeros would otherwise dominate the MSE and KL searches."""

    def __init__(self, method: Method, percentile: float = 99.99, levels: int = 256, bins: int = BINS):
        super().__init__()
        self.method, self.percentile, self.levels, self.bins = method, percentile, levels, bins
        self.hist: np.ndarray | None = None
        self.zeros = 0
        self.start = self.width = 0.0  # histogram covers [start, start + width)

    def update(self, values: np.ndarray, where: str = "tensor") -> None:
        values = np.asarray(values, np.float64).ravel()
        if values.size == 0:
            return
        super().update(values, where)
        nonzero = values[values != 0]
        self.zeros += values.size - nonzero.size
        if nonzero.size == 0:
            return
        values = nonzero
        lo, hi = float(values.min()), float(values.max())
        if self.hist is None:
            self.start, self.width = lo, max(hi - lo, 1e-8)
            self.hist = np.zeros(self.bins, np.int64)
        while lo < self.start or hi >= self.start + self.width:
            self._double(grow_left=lo < self.start)
        idx = ((values - self.start) / self.width * self.bins).astype(np.int64)
        self.hist += np.bincount(np.clip(idx, 0, self.bins - 1), minlength=self.bins)

    def _double(self, grow_left: bool) -> None:
        merged = self.hist.reshape(-1, 2).sum(1)
        pad = np.zeros(self.bins // 2, np.int64)
        self.hist = np.concatenate([pad, merged] if grow_left else [merged, pad])
        if grow_left:
            self.start -= self.width
        self.width *= 2

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if hi - lo <= 0 or self.method == "minmax" or self.hist is None:
            return lo, hi
        edges = self.start + self.width * np.arange(self.bins + 1) / self.bins
        if self.method == "percentile":
            return self._percentile(edges, lo, hi)
        score = self._mse if self.method == "mse" else self._kl
        return self._search(lambda a, b: score(edges, a, b), lo, hi)

    @staticmethod
    def _search(score, lo: float, hi: float, steps: int = 64, rounds: int = 3) -> tuple[float, float]:
        """Minimize ``score(a, b)`` over ranges [a, b] inside [lo, hi], moving each end towards zero in turn
        (coordinate descent: one-sided outliers shrink one end only)."""
        fractions = np.linspace(1.0 / steps, 1.0, steps)
        a, b = lo, hi
        for _ in range(rounds):
            if hi > 0:
                b = min((hi * f for f in fractions if hi * f > a), key=lambda x: score(a, x), default=b)
            if lo < 0:
                a = min((lo * f for f in fractions if lo * f < b), key=lambda x: score(x, b), default=a)
        return float(a), float(b)

    def _percentile(self, edges: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
        hist = self.hist.astype(np.float64)
        hist[int(np.clip((0.0 - self.start) / self.width * self.bins, 0, self.bins - 1))] += self.zeros
        cdf = np.cumsum(hist) / hist.sum()
        q = self.percentile / 100.0
        new_hi = float(edges[min(int(np.searchsorted(cdf, q)) + 1, self.bins)])
        new_lo = float(edges[int(np.searchsorted(cdf, 1.0 - q))])
        return max(lo, new_lo), min(hi, new_hi)

    def _quant_grid(self, a: float, b: float) -> tuple[float, float]:
        a, b = min(a, 0.0), max(b, 0.0)
        step = (b - a) / (self.levels - 1)
        return a, max(step, 1e-12)

    def _mse(self, edges: np.ndarray, a: float, b: float) -> float:
        """Expected squared error of clipping to [a, b] and rounding to the uniform grid, with each
        bin's mass at its centre and rounding noise step^2/12 inside the range."""
        centers = (edges[:-1] + edges[1:]) / 2
        lo, step = self._quant_grid(a, b)
        hi = lo + step * (self.levels - 1)
        clipped = np.clip(centers, lo, hi)
        err = (centers - clipped) ** 2 + np.where(clipped == centers, step ** 2 / 12, 0.0)
        return float((err * self.hist).sum())

    def _kl(self, edges: np.ndarray, a: float, b: float) -> float:
        """KL divergence between the histogram clipped to [a, b] with the clipped mass folded into the end
        bins (what quantizing to that range yields) and the in-range histogram merged into ``levels`` levels
        (mass spread evenly over each level's non-empty bins). Clipping heavy tails costs through the end
        bins; a range too wide costs through the merging."""
        i0 = int(np.clip(np.searchsorted(edges, a, "right") - 1, 0, self.bins - 1))
        i1 = int(np.clip(np.searchsorted(edges, b, "left"), i0 + 1, self.bins))
        n = i1 - i0
        if n < self.levels:
            return np.inf
        inside = self.hist[i0:i1].astype(np.float64)
        p = inside.copy()
        p[0] += self.hist[:i0].sum()
        p[-1] += self.hist[i1:].sum()
        group = np.minimum((np.arange(n) * self.levels) // n, self.levels - 1)
        mass = np.bincount(group, weights=inside, minlength=self.levels)
        nonzero = np.bincount(group, weights=(inside > 0).astype(np.float64), minlength=self.levels)
        q = np.where(inside > 0, mass[group] / np.maximum(nonzero[group], 1), 0.0)
        p, q = p / p.sum(), q / max(q.sum(), 1e-300)
        keep = p > 0
        return float(np.sum(p[keep] * np.log(p[keep] / np.maximum(q[keep], 1e-12))))


def make_observer(method: Method, percentile: float = 99.99, levels: int = 256) -> MinMaxObserver:
    """An observer for ``method`` (``levels``: quantization levels the range is chosen for, 256 for 8 bits)."""
    if method not in METHODS:
        from ..errors import unknown

        raise unknown("calibration method", method, METHODS)
    if method == "minmax":
        return MinMaxObserver()
    return HistogramObserver(method, percentile, levels)
