import itertools
from dataclasses import replace

import numpy as np

from modelpress import bench, energy


def fake_clock(monkeypatch, durations):
    """perf_counter that advances by the duration of whichever function runs."""
    now = itertools.count()
    state = {"t": 0.0}

    def perf_counter():
        next(now)
        return state["t"]

    monkeypatch.setattr(bench.time, "perf_counter", perf_counter)

    def make(name):
        def fn(_inputs):
            state["t"] += durations[name] / 1e3
        return fn
    return {n: make(n) for n in durations}


def test_interleaved_counts_and_order(monkeypatch):
    fns = fake_clock(monkeypatch, {"a": 2.0, "b": 1.0})
    cfg = bench.BenchConfig(batch_sizes=(1,), warmup=2, rounds=4, runs_per_round=3)
    t = bench.interleaved(fns, {}, cfg)
    assert [len(r) for r in t["a"]] == [3] * 4 and len(t["b"]) == 4
    assert np.allclose(np.concatenate(t["a"]), 2.0) and np.allclose(np.concatenate(t["b"]), 1.0)


def test_compare_ratio(monkeypatch):
    fns = fake_clock(monkeypatch, {"cand": 0.5, "base": 2.0})
    res = bench.compare(fns["cand"], fns["base"], lambda bs: {}, bench.BenchConfig(batch_sizes=(1, 8), rounds=3))
    assert set(res) == {1, 8}
    assert abs(res[1]["ratio"] - 0.25) < 1e-9 and abs(res[8]["paired_ratio"] - 0.25) < 1e-9
    assert abs(bench.throughput_per_s({8: res[8]["candidate"]})[8] - 8 * 1e3 / 0.5) < 1e-6
    assert res[1]["paired_iqr"] == [0.25, 0.25] and res[1]["rounds"] == 3  # steady timings: no extra rounds


def test_compare_times_more_rounds_while_the_spread_is_wide(monkeypatch):
    state = {"t": 0.0, "calls": 0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: state["t"])

    def candidate(_inputs):  # 1 ms and 3 ms in turn against a steady 2 ms: per-round ratios 0.5 and 1.5
        state["calls"] += 1
        state["t"] += (1.0 if state["calls"] % 2 else 3.0) / 1e3

    def baseline(_inputs):
        state["t"] += 2.0 / 1e3

    def timed(**settings):
        config = bench.BenchConfig(batch_sizes=(1,), warmup=0, rounds=4, runs_per_round=1, **settings)
        return bench.compare(candidate, baseline, lambda bs: {}, config)[1]

    wide = timed(max_rounds=10)
    assert wide["rounds"] == 10  # more rounds, up to max_rounds, as the spread never narrows
    q1, q3 = wide["paired_iqr"]
    assert q1 <= wide["paired_ratio"] <= q3 and q3 - q1 > 0.5
    assert timed(max_spread=10.0)["rounds"] == 4  # a spread within max_spread: the configured rounds suffice
    assert timed()["rounds"] == 12  # max_rounds None: three times rounds


def test_compare_times_until_min_seconds_have_passed(monkeypatch):
    fns = fake_clock(monkeypatch, {"cand": 1.0, "base": 1.0})  # steady: the spread alone asks for nothing more
    config = bench.BenchConfig(batch_sizes=(1, 4), warmup=0, rounds=5, runs_per_round=2, min_seconds=0.1)
    res = bench.compare(fns["cand"], fns["base"], lambda bs: {}, config)
    # 5 rounds of 2 runs of each function take 20 ms: 5 blocks of 5 rounds reach 100 ms, for each batch size
    assert res[1]["rounds"] == res[4]["rounds"] == 25 and res[1]["paired_ratio"] == 1.0
    assert bench.compare(fns["cand"], fns["base"], lambda bs: {}, replace(config, min_seconds=0.0))[1]["rounds"] == 5
    t = bench.interleaved(fns, {}, replace(config, min_seconds=0.05))
    assert len(t["cand"]) == len(t["base"]) == 13  # 4 ms a round: the round that starts at 48 ms is the last


def test_percentiles_order():
    p = bench.percentiles(list(range(1, 101)))
    assert p["p50"] <= p["p90"] <= p["p99"] and p["runs"] == 100


def test_energy_meter_never_guesses(tmp_path, monkeypatch):
    monkeypatch.setattr(energy.EnergyMeter, "ROOT", tmp_path / "absent")
    m = energy.EnergyMeter()
    assert not m.available and m.measure(lambda: None, 3) is None and "RAPL" in m.why
    dom = tmp_path / "rapl" / "intel-rapl:0"
    dom.mkdir(parents=True)
    (dom / "energy_uj").write_text("1000000")
    monkeypatch.setattr(energy.EnergyMeter, "ROOT", tmp_path / "rapl")
    m = energy.EnergyMeter()
    counter = iter([1_000_000, 3_000_000])
    monkeypatch.setattr(m, "_read", lambda: next(counter) / 1e6)
    assert m.available and m.measure(lambda: None, 4) == 0.5
