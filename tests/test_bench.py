import itertools

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
