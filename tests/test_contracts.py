"""Contract tests over the registries: every entry honours its interface, so a new entry is tested
by adding one line to ``modelpress/registry.py``."""
import copy
import importlib

import numpy as np
import pytest
import torch
import yaml

from modelpress import registry
from modelpress.compress import Applied
from modelpress.config import parse, to_dict
from modelpress.export import onnx as onnx_export
from modelpress.zoo import DepthwiseCNN, LeNet5, TinyResNet, TinyTransformer


@pytest.mark.parametrize("name", sorted(registry.RUNTIMES))
def test_runtime_interface(name):
    mod = registry.module("runtime", name)
    assert isinstance(mod.FORMATS, tuple) and all(f in registry.EXPORTERS for f in mod.FORMATS)
    assert isinstance(mod.available(), bool)
    assert mod.available() or mod.why_unavailable()
    assert callable(mod.load)


@pytest.mark.parametrize("name", sorted(registry.EXPORTERS))
def test_exporter_interface(name):
    mod = registry.module("export format", name)
    assert mod.FORMAT == name and callable(mod.export)
    cfg = parse(mod.Config, {}, "export.options")
    assert parse(mod.Config, yaml.safe_load(yaml.safe_dump(to_dict(cfg))), "export.options") == cfg


@pytest.mark.parametrize("name", sorted(registry.TASKS))
def test_task_entries_resolve(name):
    module_name, _, attr = registry.TASKS[name].partition(":")
    assert callable(getattr(importlib.import_module(module_name), attr))


@pytest.mark.parametrize("name", sorted(registry.STORAGE))
def test_storage_interface(name):
    mod = registry.module("storage encoding", name)
    assert callable(mod.encode) and callable(mod.decode)


@pytest.mark.parametrize("name", sorted(registry.TECHNIQUES))
def test_technique_config_round_trips(name):
    mod = registry.module("technique", name)
    cfg = parse(mod.Config, {}, name)
    assert parse(mod.Config, yaml.safe_load(yaml.safe_dump(to_dict(cfg))), name) == cfg
    with pytest.raises(Exception, match="Unknown key"):
        parse(mod.Config, {"no_such_setting": 1}, name)


SMALL_MODELS = {
    "lenet5": (lambda: LeNet5(), (1, 28, 28)),
    "resnet": (lambda: TinyResNet(), (1, 16, 16)),
    "depthwise": (lambda: DepthwiseCNN(), (1, 16, 16)),
    "transformer": (lambda: TinyTransformer(), (8, 8)),
}


def small_task(shape):
    from modelpress.task import Batches, Task

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    return Task(name="small", build_model=lambda: None, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x[:32]}, batch_size=16),
                val_data=Batches({"x": x[32:64]}, y[32:64], batch_size=32),
                test_data=Batches({"x": x[64:]}, y[64:], batch_size=32),
                train_data=Batches({"x": x}, y, batch_size=32, shuffle=True), num_classes=10)


@pytest.mark.parametrize("model_name", sorted(SMALL_MODELS))
@pytest.mark.parametrize("name", sorted(registry.TECHNIQUES))
def test_technique_keeps_shape_and_exports(name, model_name, tmp_path):
    build, shape = SMALL_MODELS[model_name]
    torch.manual_seed(0)
    model, task = build().eval(), small_task(shape)
    mod = registry.module("technique", name)
    applied = mod.apply(copy.deepcopy(model), parse(mod.Config, {}, name), task)
    assert isinstance(applied, Applied)
    out_model = applied.model
    x = task.example_inputs(4)
    with torch.no_grad():
        assert out_model(torch.from_numpy(x["x"])).shape == model(torch.from_numpy(x["x"])).shape
    onnx_export.export(out_model, task, tmp_path, rewrites=applied.onnx_rewrites)


@pytest.mark.parametrize("name", sorted(registry.TECHNIQUES))
def test_technique_has_a_recipe_a_doc_page_and_tests(name):
    """The five places of docs/contributing.md: module and registry line (the table), an example recipe
    that uses it as a step, a doc page that documents its settings, and tests that run it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    step = f"- {name}:"
    assert any(step in p.read_text() for p in (root / "recipes").glob("*.yaml")), f"no recipe has a '{name}' step"
    assert any(f"`{name}`" in p.read_text() for p in (root / "docs").glob("*.md")), f"no doc page documents '{name}'"
    assert any(f'"{name}"' in p.read_text() or f"{name}." in p.read_text()
               for p in (root / "tests").glob("test_*.py") if p.name != "test_contracts.py"), f"no test runs '{name}'"


def test_a_technique_registered_in_the_table_alone_runs_through_run_and_the_search(tmp_path):
    """Nothing but the registry line makes a new technique usable: a recipe accepts it as a step,
    ``run`` applies and exports it, and the search's space offers it with its SEARCH_SPACE."""
    from modelpress.pipeline import run
    from modelpress.recipe import parse_recipe
    from modelpress.search.space import resolve
    from modelpress.searchconfig import SearchConfig

    from . import test_search_fakes as fakes

    with registry.overlay("technique", {"shrink": fakes.MODULE}):
        recipe = parse_recipe({"task": "digits", "steps": [{"shrink": {"rank_ratio": 0.5}}],
                               "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 1}})
        result = run(recipe, tmp_path / "run")
        space = resolve(parse(SearchConfig, {}, "search"), recipe)
    assert result.facts["ranks"] and (tmp_path / "run" / "result.json").exists()
    assert "shrink" in space.settings and space.settings["shrink"]["rank_ratio"] == fakes.SEARCH_SPACE["rank_ratio"]
    assert "shrink" not in registry.TECHNIQUES
