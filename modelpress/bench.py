"""Latency, throughput, size, memory and energy, measured on the target runtime.

Latency flips between fast and slow levels on shared machines, so comparisons time the candidate and
the baseline interleaved in one process, many rounds, and report medians and the median of the
per-round (paired) ratios.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import check

RunFn = Callable[[dict[str, np.ndarray]], Any]


@dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 32)
    warmup: int = 5
    rounds: int = 15
    runs_per_round: int = 10
    # A comparison whose per-round ratios spread wider than this (interquartile range / median) gets
    # another ``rounds`` rounds, up to ``max_rounds`` in all (None: 3 x rounds).
    max_spread: float = 0.1
    max_rounds: int | None = None
    # Time each batch size over at least this many seconds (more rounds, beyond max_rounds if need be):
    # latency flips between levels for seconds at a time, so a comparison that fits inside one level
    # measures that level (a small model's 15 rounds take milliseconds). 0: no minimum.
    min_seconds: float = 0.0

    def __post_init__(self) -> None:
        check(len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes),
              f"batch_sizes must be a non-empty list of positive numbers, got {list(self.batch_sizes)}.")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}.")
        check(self.rounds >= 1 and self.runs_per_round >= 1, "rounds and runs_per_round must be at least 1.")
        check(self.max_spread > 0, f"max_spread must be positive, got {self.max_spread}.")
        check(self.max_rounds is None or self.max_rounds >= self.rounds,
              f"max_rounds must be at least rounds ({self.rounds}), got {self.max_rounds}.")
        check(0 <= self.min_seconds <= 3600, f"min_seconds must be between 0 and 3600, got {self.min_seconds}.")


def percentiles(times_ms: list[float]) -> dict[str, float]:
    a = np.asarray(times_ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "runs": int(a.size)}


def interleaved(runs: Mapping[str, RunFn], inputs: dict[str, np.ndarray], config: BenchConfig = BenchConfig()
                ) -> dict[str, list[list[float]]]:
    """Time every function on the same inputs, alternating between them each round: ``config.rounds`` rounds,
    and more until ``config.min_seconds`` have passed.

    Returns, per name, one list of per-call times in ms for each round.
    """
    names = list(runs)
    for name in names:
        for _ in range(config.warmup):
            runs[name](inputs)
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in itertools.count():
        if r >= config.rounds and time.perf_counter() - start >= config.min_seconds:
            break
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn, samples = runs[name], []
            for _ in range(config.runs_per_round):
                t0 = time.perf_counter()
                fn(inputs)
                samples.append((time.perf_counter() - t0) * 1e3)
            times[name].append(samples)
    return times


def spread(paired: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of per-round ratios."""
    q1, med, q3 = np.percentile(np.asarray(paired, dtype=np.float64), [25, 50, 75])
    return float(med), float(q1), float(q3)


def compare(candidate: RunFn, baseline: RunFn, example: Callable[[int], dict[str, np.ndarray]],
            config: BenchConfig = BenchConfig(), progress: Callable[[str], None] | None = None) -> dict[int, dict]:
    """Candidate against baseline per batch size: both latency profiles, the ratio of medians
    (candidate / baseline), the median of the per-round ratios and their interquartile range. When the
    per-round ratios spread wider than ``config.max_spread`` of their median, more rounds are timed (up
    to ``max_rounds``); the first ``rounds`` go on until ``config.min_seconds`` have passed; ``rounds`` says how
    many were timed."""
    out = {}
    limit = config.max_rounds or 3 * config.rounds  # None: three times the rounds asked for
    for bs in config.batch_sizes:
        if progress:
            progress(f"timing batch {bs}")
        inputs = example(bs)
        t = interleaved({"candidate": candidate, "baseline": baseline}, inputs, config)
        while True:
            paired = [np.median(c) / np.median(b) for c, b in zip(t["candidate"], t["baseline"])]
            med, q1, q3 = spread(paired)
            if (q3 - q1) <= config.max_spread * med or len(paired) >= limit:
                break
            more = interleaved({"candidate": candidate, "baseline": baseline}, inputs,
                               replace(config, warmup=0, rounds=min(config.rounds, limit - len(paired)), min_seconds=0))
            t = {k: t[k] + more[k] for k in t}
        cand = [x for rnd in t["candidate"] for x in rnd]
        base = [x for rnd in t["baseline"] for x in rnd]
        out[bs] = {"candidate": percentiles(cand), "baseline": percentiles(base),
                   "ratio": float(np.median(cand) / np.median(base)), "paired_ratio": med,
                   "paired_iqr": [q1, q3], "rounds": len(paired)}
    return out


def single(run: RunFn, example: Callable[[int], dict[str, np.ndarray]], config: BenchConfig = BenchConfig()
           ) -> dict[int, dict[str, float]]:
    """Latency percentiles of one session per batch size."""
    out = {}
    for bs in config.batch_sizes:
        t = interleaved({"x": run}, example(bs), config)["x"]
        out[bs] = percentiles([x for rnd in t for x in rnd])
    return out


def throughput_per_s(latency: Mapping[int, Mapping[str, float]]) -> dict[int, float]:
    """Samples per second at each batch size, from the median latency."""
    return {bs: bs * 1e3 / stats["p50"] for bs, stats in latency.items()}


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_memory(load: Callable[[], Any], run: Callable[[Any], Any]) -> tuple[Any, int]:
    """Load a session and run it once, returning it and the growth of resident memory in bytes
    (sampled after load and after the run: the memory the session holds to serve a batch)."""
    before = rss_bytes()
    session = load()
    after_load = rss_bytes()
    run(session)
    return session, max(0, max(after_load, rss_bytes()) - before)
