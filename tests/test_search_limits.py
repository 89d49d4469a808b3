"""Bounded trials: a trial past its time limit is stopped and recorded as such while the study goes on; a
technique that fails on the model is recorded once and not run again; a step estimated far over the trial
limit is left out unmeasured; cost estimates grow with the model.

``stall`` (defined here, registered by the tests) sleeps ``seconds``, raises when ``fail`` is set, ends its
process when ``crash`` is, and claims the cost ``estimate``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from torch import nn

from modelpress.compress import Applied
from modelpress.recipe import parse_recipe
from modelpress.search.loop import auto

MODULE = __name__
SEARCH_SPACE = {"seconds": [0.0]}
BENCH = {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 1}


@dataclass(frozen=True)
class Config:
    seconds: float = 0.0
    fail: bool = False
    refuse: bool = False  # a clear refusal of these settings (a ModelpressError)
    crash: bool = False  # the process dies (as out of memory, or a crash in native code, would end it)
    estimate: float = 0.0


def apply(model: nn.Module | Applied, config: Config, task, tools=None) -> Applied:
    if config.fail:
        raise RuntimeError("stall cannot handle this model")
    if config.refuse and config.seconds > 0:
        from modelpress.errors import ConfigError

        raise ConfigError("stall refuses seconds > 0 on this model")
    if config.crash:
        import os

        os._exit(3)
    time.sleep(config.seconds)
    return Applied.of(model)


def estimate_s(config: Config, profile) -> float:
    return config.estimate


@pytest.fixture
def stall(monkeypatch):
    from modelpress import registry

    monkeypatch.setitem(registry.TECHNIQUES, "stall", MODULE)


def recipe(space: dict, trials: int, **search) -> object:
    return parse_recipe({"task": "digits", "bench": BENCH, "search": {
        "trials": trials, "subset_samples": 128, "startup_trials": 1,
        "space": {"techniques": ["stall"], "max_steps": 1, "stall": space, "runtime": {"backend": ["onnxruntime"]}},
        **search}})


def outcome(out, trial: int) -> dict:
    return json.loads((out / f"trials/{trial:04d}/outcome.json").read_text())


def test_a_trial_past_its_limit_is_stopped_and_the_study_goes_on(stall, tmp_path):
    limit = 20.0  # the fp32 trial, on a loaded machine, must fit
    out = tmp_path / "out"
    started = time.monotonic()
    summary = auto(recipe({"seconds": [600.0]}, trials=2, trial_timeout_s=limit), out)
    assert time.monotonic() - started < 300  # nobody waited for the 600 s sleep
    rows = {r["seed"]: r for r in summary["trials"]}
    assert rows["fp32"]["state"] == "complete"
    stopped = outcome(out, rows["default:stall"]["trial"])
    assert stopped["status"] == "timeout" and stopped["limit_s"] == limit
    assert limit <= stopped["seconds"]["total"] <= 1.1 * limit
    assert "applying stall" in stopped["ended"] and "20 s" in stopped["ended"]
    (entry,) = summary["excluded"]
    assert entry["technique"] == "stall" and entry["settings"]["seconds"] == 600.0
    assert entry["trial"] == rows["default:stall"]["trial"] and "time limit" in entry["reason"]


def test_the_search_ends_within_its_own_time_limit_and_blames_no_step_for_it(stall, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    summary = auto(recipe({"seconds": [600.0]}, trials=2, timeout_s=90, trial_timeout_s=600), out)
    assert time.monotonic() - started <= 90 + 15  # loading the task counts; reports and the kill come on top
    rows = {r["seed"]: r for r in summary["trials"]}
    stopped = outcome(out, rows["default:stall"]["trial"])
    assert stopped["status"] == "timeout" and stopped["stopped_by"] == "search"
    assert stopped["seconds"]["total"] <= 1.1 * stopped["limit_s"] and "the search's time limit" in stopped["ended"]
    assert summary["excluded"] == []  # the step was not too slow: the search ran out of time


def test_a_technique_that_fails_is_recorded_once_and_not_run_again(stall, tmp_path):
    out = tmp_path / "out"
    summary = auto(recipe({"fail": [True], "seconds": [0.0, 0.01]}, trials=4), out)
    failed = [r for r in summary["trials"] if "stall" in r["candidate"]]
    assert len(failed) == 1 and failed[0]["state"] == "failed"  # the other setting was never run
    assert "cannot handle this model" in outcome(out, failed[0]["trial"])["error"]
    (entry,) = summary["excluded"]
    assert entry["technique"] == "stall" and entry["settings"] is None and "failed on this model" in entry["reason"]
    assert summary["counts"]["failed"] == 1  # the left-out proposals count as neither trials nor failures


def test_a_refusal_leaves_out_only_the_settings_it_refused(stall, tmp_path):
    out = tmp_path / "out"
    search = {"startup_trials": 8}
    summary = auto(recipe({"refuse": [True], "seconds": [0.01, 0.0]}, trials=3, **search), out)
    runs = {r["candidate"]: r["state"] for r in summary["trials"] if "stall" in r["candidate"] and not r["cached"]}
    assert runs == {"stall(seconds=0.01, refuse=True) on onnxruntime": "failed",
                    "stall(seconds=0.0, refuse=True) on onnxruntime": "complete"}  # the other setting still ran
    (entry,) = summary["excluded"]
    assert entry["settings"]["seconds"] == 0.01 and "refused these settings" in entry["reason"]


def test_a_worker_that_dies_in_a_trial_is_recorded_and_replaced(stall, tmp_path):
    out = tmp_path / "out"
    summary = auto(recipe({"crash": [True]}, trials=2, trial_timeout_s=120), out)
    rows = {r["seed"]: r for r in summary["trials"]}
    died = outcome(out, rows["default:stall"]["trial"])
    assert died["status"] == "failed" and "died (exit code 3) while applying stall" in died["error"]
    assert rows["fp32"]["state"] == "complete"
    (entry,) = summary["excluded"]
    assert entry["technique"] == "stall"


def test_a_step_estimated_far_over_the_limit_is_left_out_unmeasured(stall, tmp_path):
    out = tmp_path / "out"
    summary = auto(recipe({"estimate": [1000.0]}, trials=2, trial_timeout_s=60), out)
    assert [r["seed"] for r in summary["trials"]] == ["fp32"]  # the stall default never ran
    (entry,) = summary["excluded"]
    assert entry["trial"] is None and "estimated at 1000 s" in entry["reason"] and "60 s" in entry["reason"]


def test_estimates_grow_with_the_model_and_the_work_asked():
    from modelpress.compress import lowrank, quantize
    from modelpress.search.cost import Profile

    small = Profile(params=150_000, layers=4, sample_s=1e-5, train_samples=1000, val_samples=400)
    large = Profile(params=10_000_000, layers=120, sample_s=5e-3, train_samples=0, val_samples=1000, base_s=60.0)
    for profile in (small, large):
        modes = [quantize.estimate_s(quantize.Config(mode=m), profile) for m in ("dynamic", "static", "mixed")]
        assert modes == sorted(modes) and modes[0] < modes[2]
        by = {r: lowrank.estimate_s(lowrank.Config(rank_by=r), profile) for r in ("energy", "sensitivity")}
        assert by["energy"] < by["sensitivity"]
    unbounded = lowrank.Config(rank_by="sensitivity", sensitivity_budget_s=None)
    assert lowrank.estimate_s(unbounded, large) > 100 * lowrank.estimate_s(unbounded, small)
    assert lowrank.estimate_s(unbounded, large) > 600  # a real CNN's full sensitivity ranking takes many minutes
    bounded = lowrank.Config(rank_by="sensitivity", sensitivity_budget_s=120)
    assert 120 < lowrank.estimate_s(bounded, large) < 0.2 * lowrank.estimate_s(unbounded, large)


def test_lowrank_sensitivity_keeps_to_its_budget_with_fewer_probe_inputs():
    import torch

    from modelpress.compress.lowrank import MIN_PROBE_SAMPLES, sized_to_budget

    inputs = {"x": torch.zeros(128, 3)}
    kept, facts = sized_to_budget(inputs, probes=100, probe_s=0.5, budget_s=10.0)  # 50 s of probes for 10 s
    assert len(kept["x"]) == 25 and facts["probe_samples"] == 25 and facts["expected_s"] <= 10.0
    kept, facts = sized_to_budget(inputs, probes=100, probe_s=0.5, budget_s=0.1)
    assert len(kept["x"]) == MIN_PROBE_SAMPLES  # never fewer, even when that stays over the budget
    kept, facts = sized_to_budget(inputs, probes=10, probe_s=0.5, budget_s=10.0)  # fits: every input
    assert len(kept["x"]) == 128 and facts["probe_samples"] == facts["calib_samples"] == 128
    kept, _ = sized_to_budget(inputs, probes=10_000, probe_s=1.0, budget_s=None)
    assert len(kept["x"]) == 128


def test_lowrank_on_a_tight_budget_probes_fewer_inputs_and_says_so():
    from modelpress.compress import lowrank
    from modelpress.task import load_task

    task = load_task("digits")
    applied = lowrank.apply(task.build_model(), lowrank.Config(rank_by="sensitivity", sensitivity_budget_s=1e-4), task)
    facts = applied.facts["lowrank_budget"]["sensitivity"]
    assert facts["probe_samples"] < facts["calib_samples"] and facts["probes"] > 0 and applied.facts["ranks"]


def test_the_single_technique_defaults_are_seeded_cheapest_first(tmp_path):
    import optuna

    from modelpress.search.study import STUDY_NAME

    r = parse_recipe({"task": "digits", "bench": BENCH, "search": {
        "trials": 1, "space": {"techniques": ["lowrank", "quantize", "cluster"], "max_steps": 1,
                               "lowrank": {"rank_by": ["sensitivity"]}, "quantize": {"mode": ["dynamic"]}, "runtime": {"backend": ["onnxruntime"]}}}})
    auto(r, tmp_path / "out")  # one trial: the rest stay queued in seeding order
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tmp_path / 'out/study.db'}")
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert trials[0].user_attrs["seed"] == "fp32"
    estimates = {t.user_attrs["seed"].split(":")[1]: t.user_attrs["estimate_s"] for t in trials[1:]}
    assert set(estimates) == {"lowrank", "quantize", "cluster"}
    assert list(estimates.values()) == sorted(estimates.values())
    assert estimates["quantize"] < estimates["lowrank"]  # rounding weights vs probing every layer's ranks
