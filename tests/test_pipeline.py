import json
from pathlib import Path

import pytest

from modelpress.errors import ModelpressError
from modelpress.pipeline import check_finite, run
from modelpress.recipe import load_recipe
from modelpress.result import Result

from .conftest import fast

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"schema", "task", "score", "baseline_score", "score_drop", "val_score", "baseline_val_score",
            "val_score_drop", "latency_ms", "latency_ratio", "latency_ratio_iqr", "latency_verdict", "throughput_per_s",
            "size_bytes", "baseline_size_bytes", "size_ratio", "peak_memory_bytes", "parity", "fidelity",
            "energy_j_per_inference", "constraints_met", "violations", "error"}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "baseline"
    result = run(fast(load_recipe(ROOT / "recipes/baseline.yaml")), out)
    return out, result


def test_baseline_result(baseline_run):
    out, result = baseline_run
    assert REQUIRED <= result.to_json().keys()
    assert result.score >= 0.97 and result.val_score >= 0.97 and result.error is None
    for compared in (result.parity, result.fidelity):  # no compression: the artifact is the fp32 model
        assert set(compared) == {"logits"}
        assert compared["logits"]["max_abs_diff"] <= 1e-4 and compared["logits"]["agreement"] == 1.0
        assert compared["logits"]["top5_overlap"] == 1.0 and compared["logits"]["cosine"] > 0.9999
    assert set(result.latency_ms) == {"1", "4"}
    assert all({"p50", "p90", "p99"} <= v.keys() for v in result.latency_ms.values())
    assert set(result.latency_verdict) == {"1", "4"}
    assert all(v in ("faster", "slower", "no measurable difference") for v in result.latency_verdict.values())
    assert all(q1 <= result.latency_ratio[bs] <= q3 for bs, (q1, q3) in result.latency_ratio_iqr.items())
    assert result.size_bytes == (out / "artifact/model.onnx").stat().st_size
    assert result.energy_j_per_inference is None or result.energy_j_per_inference > 0
    assert result.energy_j_per_inference is not None or result.energy_note


def test_output_folder_contents(baseline_run):
    out, result = baseline_run
    assert sorted(p.name for p in out.iterdir()) == [".modelpress-output", "artifact", "recipe.yaml", "report.md",
                                                     "result.json"]
    written = json.loads((out / "result.json").read_text())
    assert written["schema"] == 2 and written["score"] == result.score
    assert Result.from_json(written) == result  # result.json holds the whole Result
    assert load_recipe(out / "recipe.yaml").task == "digits"  # the run can be rebuilt from its own recipe
    assert "| score (test) |" in (out / "report.md").read_text()
    assert not list(out.parent.glob(".baseline.partial-*"))


def test_existing_output_is_refused_and_kept(baseline_run):
    out, _ = baseline_run
    before = (out / "result.json").read_bytes()
    with pytest.raises(ModelpressError, match="already exists.*--force"):
        run(fast(load_recipe(ROOT / "recipes/baseline.yaml")), out)
    assert (out / "result.json").read_bytes() == before


def test_nan_weights_are_named(digits_model):
    import copy

    import torch

    broken = copy.deepcopy(digits_model)
    with torch.no_grad():
        broken.classifier[1].weight[0, 0] = float("nan")
    with pytest.raises(ModelpressError, match="classifier.1.weight.*NaN"):
        check_finite(broken)
