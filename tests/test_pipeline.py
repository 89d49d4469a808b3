import json
import sys
from pathlib import Path

import pytest

from modelpress.errors import ModelpressError
from modelpress.pipeline import check_finite, run
from modelpress.recipe import load_recipe

from .conftest import fast

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"task", "score", "baseline_score", "score_drop", "latency_ms", "throughput_per_s", "size_bytes",
            "baseline_size_bytes", "peak_memory_bytes", "parity", "energy_j_per_inference", "error"}


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "baseline"
    result = run(fast(load_recipe(ROOT / "recipes/baseline.yaml")), out)
    return out, result


def test_baseline_result(baseline_run):
    out, result = baseline_run
    assert REQUIRED <= result.keys()
    assert result["score"] >= 0.97 and result["error"] is None
    assert result["parity"]["max_abs_diff"] <= 1e-4 and result["parity"]["agreement"] == 1.0
    assert set(result["latency_ms"]) == {"1", "4"}
    assert all({"p50", "p90", "p99"} <= v.keys() for v in result["latency_ms"].values())
    assert result["size_bytes"] == (out / "artifact/model.onnx").stat().st_size
    assert result["energy_j_per_inference"] is None or result["energy_j_per_inference"] > 0
    assert result["energy_j_per_inference"] is not None or result["energy_note"]


def test_output_folder_contents(baseline_run):
    out, result = baseline_run
    assert sorted(p.name for p in out.iterdir()) == [".modelpress-output", "artifact", "recipe.yaml", "report.md",
                                                     "result.json"]
    assert json.loads((out / "result.json").read_text())["score"] == result["score"]
    assert load_recipe(out / "recipe.yaml").task == "digits"  # the run can be rebuilt from its own recipe
    assert "| score |" in (out / "report.md").read_text()
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


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_runs(path, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    result = run(fast(load_recipe(path)), tmp_path / path.stem)
    assert result["error"] is None and result["parity"]["agreement"] >= 0.9
    sys.modules.pop("my_task", None)
