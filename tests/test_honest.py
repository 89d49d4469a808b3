"""Honest numbers: decisions read validation data and reports read test data; every output is compared;
an exporter never silently downgrades a technique; every recipe runs with the command it is meant for."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from modelpress.recipe import load_recipe, parse_recipe
from modelpress.task import Batches, load_task

from .conftest import fast

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def digits_other_test_labels():
    """The digits task with every test label moved to the next class: no test score can be right, but
    nothing a decision reads (calibration, validation) changed."""
    task = load_task("digits")
    test = task.test_data
    return dataclasses.replace(task, name="digits:other-test-labels",
                               test_data=Batches(test.arrays, (test.targets + 1) % 10, test.batch_size))


def _auto(task: str, out: Path) -> dict:
    from modelpress.search.loop import auto

    recipe = parse_recipe({
        "task": task, "constraints": {"max_score_drop": 0.02},
        "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 2},
        # size is the one objective: deterministic, so two studies can only differ by what they decide on
        "search": {"trials": 5, "objectives": ["size"], "seed": 3, "subset_samples": 64,
                   # round_to: auto decides by timing, which two studies need not agree on: a fixed multiple
                   "space": {"techniques": ["quantize", "prune"], "max_steps": 1, "prune": {"round_to": [16]},
                             "runtime": {"backend": ["onnxruntime"]}}},  # one runtime: what is compared is the decisions
    })
    return auto(recipe, out)


def test_search_decides_on_validation_and_reports_on_test(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    plain = _auto("digits", tmp_path / "plain")
    other = _auto("tests.test_honest:digits_other_test_labels", tmp_path / "other")

    def decisions(summary: dict) -> list[tuple]:
        return [(r["trial"], r["candidate"], r["state"], r["val_score_drop"], r["feasible"], r["pareto"], r["chosen"])
                for r in summary["trials"]]

    assert decisions(plain) == decisions(other)  # a test label never changes a decision
    assert plain["chosen"] is not None and plain["chosen"]["candidate"] == other["chosen"]["candidate"]
    # ... while the reported scores are the test scores: the wrong labels show there and only there
    assert plain["chosen"]["score"] > 0.9 and other["chosen"]["score"] < 0.2
    assert plain["baseline_val_score"] == other["baseline_val_score"]
    assert plain["baseline_score"] > 0.9 > other["baseline_score"]


def test_result_gives_validation_and_test_scores_and_fidelity_per_output(tmp_path):
    from modelpress.pipeline import run

    result = run(fast(parse_recipe({"task": "digits", "steps": [{"quantize": {"mode": "static"}}]})), tmp_path / "r")
    data = json.loads((tmp_path / "r" / "result.json").read_text())
    assert data["schema"] == 2
    task = load_task("digits")
    assert data["parity"]["logits"]["samples"] == min(task.test_data.num_samples, 8 * task.test_data.batch_size)
    for key in ("score", "val_score", "baseline_score", "baseline_val_score"):
        assert 0.9 < data[key] <= 1.0
    assert data["score"] != data["val_score"] or data["baseline_score"] != data["baseline_val_score"]
    for comparison in (data["parity"]["logits"], data["fidelity"]["logits"]):
        assert comparison["kind"] == "logits" and 0.95 <= comparison["agreement"] <= 1.0
        assert 0.8 <= comparison["top5_overlap"] <= 1.0 and comparison["cosine"] > 0.99
    assert set(data["latency_verdict"].values()) <= {"faster", "slower", "no measurable difference"}
    for bs, (q1, q3) in data["latency_ratio_iqr"].items():
        assert q1 <= data["latency_ratio"][bs] <= q3
    # int8 ops come from the artifact as the runtime runs it, and match what the graph holds
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "r" / "artifact" / "model.onnx")).graph.node}
    assert data["int8_ops"] and "QuantizeLinear" in ops
    assert result.facts["int8_layers"]


def test_an_exporter_that_cannot_lower_int8_refuses_it(tmp_path):
    from modelpress.errors import ModelpressError
    from modelpress.pipeline import run

    recipe = fast(parse_recipe({"task": "digits", "steps": [{"quantize": {"mode": "static"}}],
                                "export": {"format": "torch"}, "runtime": {"backend": "torch"}}))
    with pytest.raises(ModelpressError, match="cannot express"):
        run(recipe, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_every_output_of_a_multi_output_model_is_compared():
    from modelpress.evaluate import compare

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    ref = lambda inputs: [inputs["x"] @ np.eye(6, 5), inputs["x"] * 2.0]  # noqa: E731  class scores, embeddings
    out = lambda inputs: [inputs["x"] @ np.eye(6, 5), -inputs["x"] * 2.0]  # noqa: E731  second output ruined
    result = compare(ref, out, Batches({"x": x}, batch_size=16), ("logits", "embeddings"), ("scores", "vectors"))
    assert result["scores"]["agreement"] == 1.0 and result["scores"]["top5_overlap"] == 1.0
    assert result["vectors"]["cosine"] == pytest.approx(-1.0)
    assert "agreement" not in result["vectors"] and result["vectors"]["nn_agreement"] is not None


def test_near_ties_flipping_is_not_a_collapse_but_wrong_decided_classes_are():
    """Half the samples are near-ties (top two classes 0.01 apart): a candidate that flips exactly those keeps
    fidelity 1.0 where fp32 decides; one that is wrong on decided samples is flagged below MIN_FIDELITY."""
    from modelpress.constraints import MIN_FIDELITY
    from modelpress.evaluate import compare
    from modelpress.result import worst_fidelity

    rng = np.random.default_rng(0)
    n, classes = 64, 10
    logits = rng.standard_normal((n, classes)).astype(np.float32)
    top = rng.integers(0, classes, n)
    logits[np.arange(n), top] = 6.0
    tied = np.arange(n) % 2 == 0
    second = (top + 1) % classes
    logits[tied, second[tied]] = 6.0 - 0.01  # near-ties: the reference's top class barely wins
    flipped = logits.copy()
    flipped[tied, second[tied]] = 6.0 + 0.01  # a faithful model whose arithmetic flips each near-tie
    wrong = logits.copy()
    wrong[~tied, top[~tied]] = -6.0  # a collapsed model: wrong where the reference is sure
    data = Batches({"x": np.arange(n, dtype=np.float32)[:, None]}, batch_size=16)
    index = lambda inputs: inputs["x"][:, 0].astype(int)  # noqa: E731
    result = {}
    for name, scores in (("flipped", flipped), ("wrong", wrong)):
        result[name] = compare(lambda inputs: [logits[index(inputs)]], lambda inputs, s=scores: [s[index(inputs)]],
                               data, ("logits",), ("scores",))["scores"]
    assert result["flipped"]["agreement"] == pytest.approx(0.5)
    assert result["flipped"]["decisive_samples"] == n // 2 and result["flipped"]["decisive_agreement"] == 1.0
    assert worst_fidelity({"scores": result["flipped"]}) == 1.0 >= MIN_FIDELITY
    assert result["wrong"]["decisive_agreement"] == 0.0
    assert worst_fidelity({"scores": result["wrong"]}) == 0.0 < MIN_FIDELITY


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_runs_with_its_command(path, tmp_path, monkeypatch):
    """``auto_*`` recipes through ``modelpress auto`` (2 trials), the others through ``modelpress run``."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    recipe = fast(load_recipe(path))
    if path.stem.startswith("auto_"):
        from modelpress.search.loop import auto

        assert recipe.search is not None, f"{path.name} is an auto recipe without a search block"
        recipe = dataclasses.replace(recipe, search=dataclasses.replace(recipe.search, trials=2, timeout_s=None))
        summary = auto(recipe, tmp_path / path.stem)
        finished = [r for r in summary["trials"] if r["state"] in ("complete", "pruned", "failed")]
        assert len(finished) == 2 and any(r["state"] == "complete" for r in finished)
    else:
        from modelpress.pipeline import run

        assert recipe.search is None, f"{path.name} has a search block: name it auto_*.yaml"
        result = run(recipe, tmp_path / path.stem)
        first = next(iter(result.parity.values()))
        assert result.error is None and first.get("agreement", first["cosine"]) >= 0.9
    sys.modules.pop("my_task", None)

