"""benchmarks/auto_real.py without a real search: the targets of issue 20 checked on fake search summaries,
the tables it prints, its --render round trip, and the child-process plumbing with a stand-in for
``modelpress auto`` (a result read back, a search that overruns killed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import auto_real  # noqa: E402


def args(**more) -> SimpleNamespace:
    base = {"budget": 1200.0, "slack": 60.0, "trial_limit": None, "threads": 2, "streams": 1, "spinning": False,
            "trials": 200, "models": "mobilenet-v2", "quick": False}
    return SimpleNamespace(**{**base, **more})


def trial(number: int, candidate: str, state: str = "complete", seed: str | None = None, ratio: float | None = None,
          drop: float = 0.01, feasible: bool | None = None, seconds: float = 100.0, limit_s: float | None = 300.0,
          ended: str | None = None, **more) -> dict:
    """A summary row as ``modelpress.search.summary.row`` writes it (the fields the benchmark reads)."""
    complete = state == "complete"
    return {"trial": number, "candidate": candidate, "state": state, "seed": seed, "score": 1 - drop if complete else None,
            "score_drop": drop if complete else None, "val_score_drop": drop, "score_on": "test" if complete else None,
            "latency_ratio": {"1": 0.9, "8": ratio} if ratio is not None else None,
            "size_ratio": 0.3 if complete else None, "feasible": complete and drop <= 0.05 if feasible is None else feasible,
            "seconds": seconds, "limit_s": limit_s, "estimate_s": 90.0, "cached": False,
            "ended": ended or ("measured" if complete else state), "pareto": False, "chosen": False, **more}


def summary(trials: list[dict], chosen: int | None, excluded: list | None = None) -> dict:
    by = {t["trial"]: t for t in trials}
    return {"latency_batch_size": 8, "constraints": {"max_score_drop": 0.05, "min_fidelity": 0.8},
            "counts": {"complete": 3, "pruned": 0, "failed": 0, "timeout": 1, "skipped": 1, "repeats": 0, "feasible": 3},
            "excluded": excluded or [], "chosen": by.get(chosen), "pareto": [by[chosen]] if chosen is not None else [],
            "trials": trials, "missed_by": {}}


def good_study() -> dict:
    return summary([
        trial(0, "fp32", seed="fp32", ratio=1.0, drop=0.0),
        trial(1, "quantize(mode=static)", seed="default:quantize", ratio=0.62, drop=0.02),
        trial(2, "prune(ratio=0.5)", seed="default:prune", ratio=0.35, drop=0.2),  # faster, but misses the constraint
        trial(3, "lowrank()", state="timeout", seed="default:lowrank", seconds=320.0,
              ended="time limit of 300 s reached while applying lowrank"),
        trial(4, "cluster()", state="skipped", seed="default:cluster", seconds=0.0, ended="skipped: cluster failed"),
        trial(5, "prune(ratio=0.3) → quantize(mode=static)", ratio=0.41, drop=0.03),
    ], chosen=5, excluded=[{"technique": "cluster", "trial": 4, "reason": "failed on this model"}])


def rows_for(study: dict | None, wall_s: float = 1100.0, model: str = "mobilenet-v2") -> list[dict]:
    return auto_real.rows_of(model, study, {"wall_s": wall_s, "exit": "ok", "output": "out"}, args())


def statuses(rows: list[dict]) -> dict[str, str]:
    return {t["target"].split(" ")[0] + (" test" if "test" in t["target"] else ""): t["status"]
            for t in auto_real.targets(rows)}


def test_constraints_batches_and_the_recipe():
    assert auto_real.MAX_SCORE_DROP == {"minilm": 0.001, "efficientnet-lite2": 0.05, "mobilenet-v2": 0.05}
    minilm = auto_real.recipe_for("minilm", args())
    assert minilm["search"]["latency_batch_size"] == 16 and minilm["bench"]["batch_sizes"] == [1, 16]
    cnn = auto_real.recipe_for("efficientnet-lite2", args(trial_limit=300.0))
    assert cnn["search"]["latency_batch_size"] == 8 and cnn["runtime"]["threads"] == 2
    assert cnn["constraints"] == {"max_score_drop": 0.05} and cnn["search"][auto_real.TRIAL_LIMIT_FIELD] == 300.0
    auto_real.check_recipes(args(models="minilm,efficientnet-lite2,mobilenet-v2"))  # strict parse, no task loaded
    with pytest.raises(SystemExit, match="unknown model 'resnet'"):
        auto_real.check_recipes(args(models="resnet"))


def test_ratio_prefers_latency_against_the_deployed_fp32():
    row = {"latency_ratio": {"8": 0.5}}
    assert auto_real.ratio_at(row, "8") == (0.5, "fp32")
    assert auto_real.ratio_at({**row, "latency_vs_deploy": {"8": 0.4}}, "8") == (0.4, "deploy")
    assert auto_real.ratio_at({**row, "latency_vs_deploy": 0.45}, "8") == (0.45, "deploy")
    assert auto_real.ratio_at({**row, "latency_vs_deploy": None}, "8") == (0.5, "fp32")
    assert auto_real.ratio_at({}, "8") == (None, "fp32")


def test_a_good_search_passes_every_target():
    rows = rows_for(good_study())
    auto, *defaults = rows
    assert auto["candidate"].startswith("auto: prune(ratio=0.3)") and auto["latency_ratio"] == {"8": 0.41}
    assert [d["technique"] for d in defaults] == ["quantize", "prune", "lowrank", "cluster"]
    assert [d["feasible"] for d in defaults] == [True, False, False, False]
    assert auto["search"]["trials"][3]["ended"].startswith("time limit of 300 s") and auto["search"]["excluded"]
    assert statuses(rows) == {"(a)": "PASS", "(a) test": "PASS", "(b)": "PASS", "(c)": "PASS"}


def test_each_target_fails_on_its_own_evidence():
    study = good_study()
    study["trials"][1]["latency_ratio"]["8"] = 0.40  # a feasible default faster than the choice
    study["trials"][3]["seconds"] = 331.0  # 10.3% past its 300 s limit
    study["chosen"]["score_drop"] = 0.06  # within the limit on validation, not on test
    rows = rows_for(study, wall_s=1261.0)  # past 1200 + 60 s
    assert statuses(rows) == {"(a)": "FAIL", "(a) test": "FAIL", "(b)": "FAIL", "(c)": "FAIL"}
    detail = {t["target"][:3]: t["detail"] for t in auto_real.targets(rows) if "test" not in t["target"]}
    assert detail["(a)"].startswith("wall 1261 s > 1200 + 60 s") and "faster or unmeasured: quantize" in detail["(b)"]
    assert "trial 3 took 331 s, limit 300 s" in detail["(c)"]
    study["trials"][3]["seconds"] = 329.0  # within 10%
    assert statuses(rows_for(study))["(c)"] == "PASS"


def test_the_choice_must_also_be_at_most_045_of_fp32():
    study = good_study()
    study["chosen"]["latency_ratio"]["8"] = 0.46
    assert statuses(rows_for(study))["(b)"] == "FAIL"


def test_no_choice_no_limits_and_no_result():
    study = summary([trial(0, "fp32", seed="fp32", ratio=1.0, drop=0.0, limit_s=None),
                     trial(1, "quantize()", seed="default:quantize", ratio=0.6, drop=0.2, limit_s=None)], chosen=None)
    study["missed_by"] = {"max_score_drop": {"limit": 0.05, "best": 0.2, "trial": 1, "short_by": 0.15}}
    rows = rows_for(study)
    assert rows[0]["candidate"] == "auto: nothing meets the constraint"
    assert "nothing met max_score_drop: best 0.2 (trial 1), limit 0.05." in auto_real.render(rows, "t")
    assert statuses(rows) == {"(a)": "FAIL", "(a) test": "FAIL", "(b)": "FAIL", "(c)": "N/A"}
    missing = rows_for(None)
    assert missing[0]["candidate"] == "auto: no result.json" and len(missing) == 1
    assert statuses(missing) == {"(a)": "FAIL", "(a) test": "FAIL", "(b)": "FAIL", "(c)": "N/A"}
    auto_real.render(missing, "t")  # renders without the search's facts


def test_render_and_the_render_round_trip(tmp_path, capsys):
    rows = rows_for(good_study()) + rows_for(None, model="minilm")
    md = auto_real.render(rows, "title")
    assert "| mobilenet-v2 | auto: prune(ratio=0.3) → quantize(mode=static) | 0.9700 | +3.00 | 0.300 | 0.410 |" in md
    assert "| mobilenet-v2 | lowrank only (defaults): lowrank() | – | – | – | – |" in md
    assert "- PASS mobilenet-v2 (b) at least as fast as every feasible default and <= 0.45x fp32 @8: choice 0.410x" in md
    assert "- FAIL minilm (a) within budget" in md
    assert "| mobilenet-v2 | 3 | lowrank() | timeout | 320 | 90 | 300 | time limit of 300 s reached while applying lowrank |" in md
    assert "left out: cluster (trial 4): failed on this model." in md
    saved = tmp_path / "rows.json"
    saved.write_text(json.dumps(rows, default=str))
    again = auto_real.main(["--render", str(saved), "--markdown", str(tmp_path / "again.md")])
    assert again == json.loads(saved.read_text()) and auto_real.render(again, "title") == md
    assert (tmp_path / "again.md").read_text() == auto_real.render(again, auto_real.title(again))
    assert auto_real.title(again).startswith("modelpress auto on the reference models: budget 1200 s per model, "
                                             "ONNX Runtime (2 threads);")
    out = capsys.readouterr().out
    assert "PASS mobilenet-v2 (c) no trial past its time limit by more than 10%: 6 trials with a known limit" in out


FAKE_AUTO = """import json, sys, time
from pathlib import Path
recipe, out = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("-o") + 1])
if "--timeout" not in sys.argv or "--force" not in sys.argv:
    sys.exit(2)
if "1200" not in sys.argv:
    time.sleep(60)  # a search that overruns
out.mkdir(parents=True)
(out / "result.json").write_text(json.dumps(json.loads(Path(sys.argv[0]).with_name("study.json").read_text())))
"""


def test_the_search_runs_in_a_child_process_and_is_killed_when_it_overruns(tmp_path, monkeypatch):
    script = tmp_path / "fake_auto.py"
    script.write_text(FAKE_AUTO)
    (tmp_path / "study.json").write_text(json.dumps(good_study()))
    monkeypatch.setattr(auto_real, "COMMAND", [sys.executable, str(script)])
    study, run = auto_real.run_search("mobilenet-v2", args(out=tmp_path / "runs"))
    assert study == json.loads(json.dumps(good_study())) and run["exit"] == "ok" and run["wall_s"] < 30
    recipe = (tmp_path / "runs" / "mobilenet-v2.yaml").read_text()
    assert "max_score_drop: 0.05" in recipe and "latency_batch_size: 8" in recipe
    (tmp_path / "runs" / "minilm").mkdir()
    (tmp_path / "runs" / "minilm" / "result.json").write_text("{}")  # an earlier run's: not this one's
    study, run = auto_real.run_search("minilm", args(out=tmp_path / "runs", budget=0.5, slack=0.5, trial_limit=1.0))
    assert study is None and run["exit"] == "killed after 2 s" and run["wall_s"] < 30
