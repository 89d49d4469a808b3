from pathlib import Path

import pytest
import yaml

from modelpress.constraints import Quantities
from modelpress.errors import ConfigError, ModelFileError
from modelpress.recipe import load_recipe, parse_recipe

RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))


def test_baseline_recipe_parses():
    r = load_recipe(RECIPES[0].parent / "baseline.yaml")
    assert r.task == "digits" and r.steps == () and r.export.format == "onnx"
    assert r.runtime.backend == "onnxruntime" and r.runtime.threads == 2
    assert r.constraints.max_score_drop == 0.01


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_round_trips_through_yaml(path):
    r = load_recipe(path)
    assert parse_recipe(yaml.safe_load(r.to_yaml())) == r


@pytest.mark.parametrize("data, needle", [
    ({"task": "digits", "exprot": {"format": "onnx"}}, "Did you mean 'export'"),
    ({"task": "digits", "export": {"format": "onx"}}, "Did you mean 'onnx'"),
    ({"task": "digits", "runtime": {"backend": "onnxruntim"}}, "Did you mean 'onnxruntime'"),
    ({"task": "digits", "runtime": {"threads": 0}}, "threads must be at least 1"),
    ({"task": "digits", "steps": [{"quantise": {}}]}, "Unknown technique 'quantise'"),
    ({"task": "digits", "steps": {"prune": {}}}, "must be a list"),
    ({"task": "digits", "constraints": {"max_latency_ms": -1}}, "must be positive"),
    ({"task": "digits", "bench": {"batch_sizes": []}}, "batch_sizes"),
    ({"steps": []}, "missing required key(s): task"),
    ([1, 2], "must be a mapping"),
])
def test_bad_recipes_fail_clearly(data, needle):
    with pytest.raises(ConfigError) as e:
        parse_recipe(data)
    assert needle in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)


def test_constraint_violations_say_by_how_much():
    r = parse_recipe({"task": "digits", "constraints": {"max_score_drop": 0.01, "max_size_bytes": 1000}})
    v = [x.describe() for x in r.constraints.check(Quantities(score_drop=0.03, size_bytes=500))]
    assert len(v) == 1 and "score_drop" in v[0] and "0.02" in v[0]
    with pytest.raises(ConfigError, match="max_score_drop must be >= 0"):
        parse_recipe({"task": "digits", "constraints": {"max_score_drop": -0.01}})
