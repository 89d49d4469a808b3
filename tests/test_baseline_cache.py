"""A study measures every candidate against the fp32 model, exported and run once (``BaselineCache``)."""
import numpy as np

from modelpress import pipeline
from modelpress.compress import Applied
from modelpress.recipe import parse_recipe

from .test_contracts import small_task


def test_the_baseline_is_exported_once_and_its_outputs_reused(tmp_path, monkeypatch):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    task = small_task((8, 8))
    recipe = parse_recipe({"task": "digits", "steps": [],
                           "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 2}})
    scores = pipeline.Scores.of(pipeline.torch_predict(model, task), task)
    exports, runs = [], []
    real_export = pipeline.export_model
    monkeypatch.setattr(pipeline, "export_model", lambda m, *a, **k: exports.append(k.get("fp32")) or real_export(m, *a, **k))
    cache = pipeline.BaselineCache(tmp_path / "baseline")
    real_predict = pipeline.torch_predict

    def counting(m, t):
        inner = real_predict(m, t)
        return lambda inputs: runs.append(len(next(iter(inputs.values())))) or inner(inputs)

    monkeypatch.setattr(pipeline, "torch_predict", counting)
    results, counts = [], []
    for i in range(2):
        (tmp_path / f"m{i}").mkdir()
        results.append(pipeline.measure(Applied.of(model), model, task, recipe, tmp_path / f"m{i}", scores, cache))
        counts.append(len(runs))
    assert exports == [None, True, None]  # two candidates, the baseline once
    (tmp_path / "plain").mkdir()
    plain = pipeline.measure(Applied.of(model), model, task, recipe, tmp_path / "plain", scores)
    assert exports[3:] == [None, True]  # without a cache, exported again
    assert results[0].fidelity == results[1].fidelity == plain.fidelity
    assert results[0].fidelity["logits"]["agreement"] == 1.0
    assert np.isclose(results[1].size_ratio, plain.size_ratio)
    # torch runs: the first measurement runs the candidate (parity) and the baseline (fidelity) on the same
    # batches; the second only the candidate, the baseline's outputs come from the cache
    assert counts[0] > 0 and counts[1] - counts[0] == counts[0] // 2
    assert len(runs) - counts[1] == counts[0]  # without a cache: both again


def test_the_folders_of_killed_workers_are_removed_and_a_cleared_cache_exports_again(tmp_path, monkeypatch):
    import os
    import tempfile

    import torch

    from modelpress.search import trial

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    left = tmp_path / f"{trial.BASELINE_PREFIX}{os.getpid()}-abc"  # as a worker of this process would name it
    other = tmp_path / f"{trial.BASELINE_PREFIX}{os.getpid() + 1}-abc"  # another search's
    for folder in (left, other):
        (folder / "x").mkdir(parents=True)
    trial.remove_baseline_caches()
    assert not left.exists() and other.exists()
    gone = tmp_path / f"{trial.BASELINE_PREFIX}999999999-abc"  # a search process that no longer runs
    (gone / "x").mkdir(parents=True)
    trial.remove_baseline_caches(owner=0)
    assert not gone.exists() and (other.exists() or not trial._running(os.getpid() + 1))

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    task = small_task((8, 8))
    recipe = parse_recipe({"task": "digits", "steps": []})
    cache = pipeline.BaselineCache(tmp_path / "cache")
    first = cache.artifact(model, task, recipe)
    import shutil

    shutil.rmtree(tmp_path / "cache")
    again = cache.artifact(model, task, recipe)
    assert again.path.exists() and again.path == first.path
