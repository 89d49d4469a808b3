"""The benchmarks' separate re-timing of a pipeline result (benchmarks/common.py ``recheck_artifact``), as
prune_real.py and auto_real.py use it: which batches it times, and that a ratio it cannot reproduce is flagged."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import auto_real  # noqa: E402
from common import recheck_artifact  # noqa: E402

from modelpress.pipeline import run  # noqa: E402
from modelpress.recipe import parse_recipe  # noqa: E402
from modelpress.task import load_task  # noqa: E402

BENCH = {"batch_sizes": [1, 2, 4], "warmup": 1, "rounds": 3, "runs_per_round": 2}


def test_recheck_times_the_smallest_and_largest_batch_and_flags_a_ratio_it_cannot_reproduce(tmp_path):
    recipe = parse_recipe({"task": "digits", "steps": [{"cluster": {"clusters": 16}}], "bench": BENCH})
    result = run(recipe, tmp_path / "out")
    task = load_task("digits")
    again = recheck_artifact(result.latency_ratio, tmp_path / "out" / "artifact", task.build_model(), task, recipe,
                             tmp_path / "fp32")
    assert set(again["latency_recheck"]) == {"1", "4"}  # the ends of the reported batch sizes, not batch 2
    assert all(0 < r < 10 for r in again["latency_recheck"].values())
    # a reported ratio 100x what the artifact runs at is never confirmed by the second timing
    far = recheck_artifact({b: 100 * r for b, r in result.latency_ratio.items()}, tmp_path / "out" / "artifact",
                           task.build_model(), task, recipe, tmp_path / "fp32-again")
    assert far["recheck_ok"] is False
    assert recheck_artifact({}, tmp_path / "out" / "artifact", task.build_model(), task, recipe,
                            tmp_path / "none") == {"latency_recheck": {}, "recheck_ok": None}


def test_auto_real_rechecks_the_chosen_artifact_and_nothing_without_a_choice(tmp_path):
    recipe = parse_recipe({"task": "digits", "steps": [], "bench": BENCH})
    result = run(recipe, tmp_path / "digits" / "best")  # a search's best/: recipe.yaml, result.json and artifact/
    row = {"latency_ratio": {"4": result.latency_ratio["4"]}, "latency_vs": "fp32"}  # the choice's row, one batch
    out = auto_real.recheck_choice("digits", SimpleNamespace(out=tmp_path), row)
    assert set(out) == {"latency_reported", "latency_recheck", "recheck_ok"}
    assert set(out["latency_recheck"]) == {"4"} and out["latency_reported"] == row["latency_ratio"]
    assert auto_real.recheck_choice("mobilenet-v2", SimpleNamespace(out=tmp_path), row) == {}  # no best/ for it
    assert auto_real.recheck_choice("digits", SimpleNamespace(out=tmp_path), {"latency_ratio": {}}) == {}
