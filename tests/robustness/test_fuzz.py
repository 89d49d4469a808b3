"""Property-based fuzzing of recipe and config parsing: every rejection is a clear ConfigError or
ModelFileError, never a traceback of another kind. Together these run well over 2,000 cases."""
from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress import registry
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.recipe import KEYS, Recipe, parse_recipe

SETTINGS = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
SECTION_KEYS = {"export": ["format", "options"], "runtime": ["backend", "device", "threads", "precision"],
                "constraints": ["max_score_drop", "max_latency_ms", "max_size_bytes", "max_energy_j"],
                "bench": ["batch_sizes", "warmup", "rounds", "runs_per_round"]}
WORDS = ["digits", "onnx", "torch", "onnxruntime", "cpu", "cuda", "fp32", *registry.TECHNIQUES, *registry.RUNTIMES]


def section(name: str):
    keys = st.sampled_from(SECTION_KEYS[name]) | st.text(max_size=8)
    vals = st.one_of(values, st.sampled_from(WORDS), st.integers(0, 64), st.lists(st.integers(0, 64), max_size=3))
    return st.dictionaries(keys, vals, max_size=4)


steps = st.lists(st.one_of(st.sampled_from(WORDS), st.dictionaries(st.sampled_from(WORDS) | st.text(max_size=6),
                                                                    st.one_of(values, st.dictionaries(st.text(max_size=8), values, max_size=3)),
                                                                    max_size=2), values), max_size=3)
recipes = st.fixed_dictionaries({}, optional={
    "task": st.one_of(st.sampled_from(["digits", "fashion-mnist:lenet5"]), values),
    "steps": st.one_of(steps, values), "export": st.one_of(section("export"), values),
    "runtime": st.one_of(section("runtime"), values), "constraints": st.one_of(section("constraints"), values),
    "bench": st.one_of(section("bench"), values), "search": st.one_of(st.none(), values),
    "extra": values})


@SETTINGS
@given(recipes)
def test_recipe_parsing_accepts_or_rejects_clearly(data):
    try:
        recipe = parse_recipe(data)
    except ConfigError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert isinstance(recipe, Recipe)
    assert set(data) <= set(KEYS)
    assert parse_recipe(yaml.safe_load(recipe.to_yaml())).to_yaml() == recipe.to_yaml()


@SETTINGS
@given(st.one_of(values, st.text(max_size=200)))
def test_arbitrary_yaml_documents(data):
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return
    try:
        parse_recipe(doc)
    except ConfigError as e:
        assert str(e)


TECHNIQUES = sorted(registry.TECHNIQUES)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TECHNIQUES or ["none"]), st.dictionaries(st.text(max_size=10), values, max_size=4),
       st.data())
def test_technique_configs_accept_or_reject_clearly(name, junk, data):
    if name == "none":
        return
    import dataclasses

    cls = registry.module("technique", name).Config
    fields = [f.name for f in dataclasses.fields(cls)]
    settings_ = dict(junk)
    for field in data.draw(st.lists(st.sampled_from(fields), max_size=3)):
        settings_[field] = data.draw(st.one_of(values, st.integers(-3, 300), st.floats(-2, 2), st.sampled_from(WORDS)))
    try:
        parse(cls, settings_, name)
    except ConfigError as e:
        assert str(e)
