"""The search's parts without running trials: the strict ``search`` block, the space, constraints and the
Pareto front, and models stored as data in the prefix cache."""
import copy
import sys

import pytest
import torch
import yaml

from modelpress.constraints import Constraints, Quantities
from modelpress.errors import ConfigError
from modelpress.recipe import parse_recipe
from modelpress.search import pareto
from modelpress.search.space import resolve

from . import test_search_fakes as fakes
from . import test_search_fakes_noise as noise


@pytest.fixture
def fake_techniques(monkeypatch):
    fakes.register(monkeypatch)


def recipe(**search):
    return parse_recipe({"task": "digits", "constraints": {"max_score_drop": 0.01}, "search": search})


def test_importing_recipe_loads_neither_optuna_nor_ray():
    import subprocess

    code = "import sys, modelpress.recipe, modelpress.search.space; print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'ray')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_search_block_round_trips_through_yaml(fake_techniques):
    r = recipe(trials=5, objectives=["size", "latency"], space={"techniques": ["shrink"], "shrink": {"rank_ratio": [0.5, 0.25]}})
    again = parse_recipe(yaml.safe_load(r.to_yaml()))
    assert again.search == r.search and again.search.objectives == ("size", "latency")


@pytest.mark.parametrize("search, message", [
    ({"trails": 3}, "Did you mean 'trials'"),
    ({"objectives": ["latency", "latency"]}, "twice"),
    ({"objectives": ["speed"]}, "Unknown objective 'speed'"),
    ({"objectives": []}, "at least one"),
    ({"space": {"shrink": {"rank_ratio": 0.5}}}, r"must be a list of values to try.*\[0\.5\]"),
    ({"space": {"shrink": {"rank_ratio": ["half"]}}}, r"search\.space\.shrink\.rank_ratio\[0\]' must be a number"),
    ({"space": {"shrink": {"rank_ratio": [1.5]}}}, r"rank_ratio must be in \(0, 1\], got 1.5"),
    ({"space": {"shrink": {"rank_ratio": []}}}, "empty list"),
    ({"space": {"shrink": {"rank": [3]}}}, "Unknown setting 'rank' for shrink"),
    ({"space": {"shrinc": {}}}, "Did you mean 'shrink'"),
    ({"space": {"techniques": ["shrink", "nope"]}}, "Unknown technique 'nope'"),
    ({"space": {"runtime": {"backend": ["onnxruntim"]}}}, "Did you mean 'onnxruntime'"),
    ({"space": {"runtime": {"threads": [0]}}}, "threads must be at least 1"),
    ({"space": {"runtime": {"thread": [2]}}}, r"Unknown setting 'thread' for runtime in 'search\.space\.runtime'.*'threads'"),
    ({"space": {"runtime": [2]}}, r"'search\.space\.runtime' must map runtime settings"),
    ({"space": {"max_steps": -1}}, "max_steps' must be >= 0"),
    ({"workers": 0}, "workers must be at least 1"),
])
def test_bad_search_blocks_are_clear_errors(fake_techniques, search, message):
    with pytest.raises(ConfigError, match=message):
        recipe(**search)


def test_a_list_outside_search_space_is_a_plain_setting(fake_techniques):
    # steps take one value per setting: a list there is a type error, never a silent search
    with pytest.raises(ConfigError, match="must be a number"):
        parse_recipe({"task": "digits", "steps": [{"shrink": {"rank_ratio": [0.5, 0.25]}}]})


def test_space_defaults_come_from_the_techniques_and_narrow(fake_techniques):
    r = recipe(space={"techniques": ["noise", "shrink"], "shrink": {"rank_ratio": [0.3]},
                      "runtime": {"backend": ["onnxruntime"]}})
    space = resolve(r.search, r)
    assert space.techniques == ("noise", "shrink")  # the user's order is the pipeline order
    assert space.settings["shrink"] == {"rank_ratio": [0.3]}
    assert space.settings["noise"]["scale"] == noise.SEARCH_SPACE["scale"]
    assert space.backends() == ["onnxruntime"]
    assert space.pipelines() == ["noise", "shrink", "noise+shrink"]
    assert space.size() == 1 + 3 + 1 + 3  # fp32, noise x3, shrink x1, both 3x1
    defaults = [c for _, c in space.defaults()]
    assert [c.steps for c in defaults] == [(("noise", {"scale": 0.0}),), (("shrink", {"rank_ratio": 0.3}),)]


def test_order_search_samples_permutations(fake_techniques):
    import optuna

    r = recipe(space={"techniques": ["shrink", "noise"], "order": "search", "max_steps": 2})
    space = resolve(r.search, r)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    orders = set()
    for _ in range(60):
        cand = space.sample(study.ask())
        orders.add(tuple(n for n, _ in cand.steps))
    assert {("shrink", "noise"), ("noise", "shrink"), ("shrink",), ("noise",)} <= orders


@pytest.mark.parametrize("order", ["fixed", "search"])
def test_params_of_a_candidate_make_the_sampler_draw_it_and_extensions_keep_its_steps(fake_techniques, order):
    import optuna

    r = recipe(space={"techniques": ["shrink", "noise"], "order": order, "max_steps": 2,
                      "shrink": {"rank_ratio": [0.5, 0.25, 0.05]}, "noise": {"scale": [3.0, 0.0]}})
    space = resolve(r.search, r)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(20):
        cand = space.sample(study.ask())
        assert space.sample(optuna.trial.FixedTrial(space.params_of(cand))) == cand
    alone = space.candidate([("shrink", {"rank_ratio": 0.25})], space.baseline().runtime)
    (params, ext), = space.extensions(alone)
    assert dict(ext.steps) == {"shrink": {"rank_ratio": 0.25}, "noise": {"scale": 3.0}}  # noise at its first value
    assert space.sample(optuna.trial.FixedTrial(params)) == ext
    assert space.extensions(ext) == []  # max_steps reached


def test_sampled_candidate_is_a_recipe_modelpress_run_accepts(fake_techniques):
    import optuna

    r = recipe(space={"techniques": ["shrink", "noise"]})
    space = resolve(r.search, r)
    cand = space.sample(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    again = parse_recipe(yaml.safe_load(yaml.safe_dump(cand.recipe_data(r))))
    assert [s.name for s in again.steps] == [n for n, _ in cand.steps] and again.search is None


def test_violations_say_by_how_much():
    c = Constraints(max_score_drop=0.01, max_size_bytes=1000)
    values = Quantities(score_drop=0.03, latency_ms_batch1=1.0, size_bytes=900, energy_j=None)
    (v,) = c.check(values)
    assert v.constraint == "max_score_drop" and v.quantity == "score_drop" and v.excess == pytest.approx(0.02)
    assert v.relative == pytest.approx(2.0)
    assert "exceeds max_score_drop 0.01 by 0.02" in v.describe()
    assert c.margins(values) == [pytest.approx(2.0), 0.0, 0.0, 0.0, 0.0]
    assert c.check(Quantities(score_drop=0.01, size_bytes=1000)) == []  # at the limit is within it
    assert c.check(Quantities()) == []  # nothing measured: nothing missed


def test_a_collapsed_artifact_misses_the_default_fidelity_floor():
    (v,) = Constraints().check(Quantities(fidelity=0.61))  # e.g. embeddings at cosine 0.61 to fp32
    assert v.constraint == "min_fidelity" and v.limit == 0.8 and v.excess == pytest.approx(0.19)
    assert "fidelity 0.61 is below min_fidelity 0.8 by 0.19" in v.describe()
    assert Constraints().check(Quantities(fidelity=0.95)) == []
    assert Constraints(min_fidelity=None).check(Quantities(fidelity=0.1)) == []  # the floor turned off


def test_the_search_decides_on_validation_quantities():
    import dataclasses

    from modelpress.result import Result

    names = {f.name for f in dataclasses.fields(Result)}
    measured = Result(**{**dict.fromkeys(names), "facts": {}, "notes": [], "violations": [], "score_drop": 0.05,
                         "val_score_drop": 0.002, "latency_ms": {"1": {"p50": 0.3}}, "latency_ratio": {"1": 0.9},
                         "size_bytes": 900, "baseline_size_bytes": 1000, "energy_j_per_inference": None,
                         "fidelity": {"logits": {"agreement": 0.97, "cosine": 0.99}}})
    values = pareto.values_of({"result": measured.to_json()})
    assert values == Quantities(score_drop=0.002, latency_ms_batch1=0.3, size_bytes=900, fidelity=0.97)  # val drop
    stopped = pareto.values_of({"subset": {"score_drop": 0.2, "size_bytes": 500}})  # scored on validation samples
    assert stopped == Quantities(score_drop=0.2, size_bytes=500)
    c = Constraints(max_score_drop=0.01)
    assert pareto.feasible({"state": "complete", "values": values}, c)
    assert not pareto.feasible({"state": "complete", "values": stopped}, c)


def rec(number, lat, size, state="complete", drop=0.0):
    return {"number": number, "state": state, "objectives": {"latency": lat, "size": size},
            "values": Quantities(score_drop=drop, latency_ms_batch1=lat, size_bytes=size)}


def test_front_and_lexicographic_choice():
    records = [rec(0, 1.0, 100), rec(1, 0.5, 300), rec(2, 0.51, 120), rec(3, 0.6, 400), rec(4, 2.0, 50)]
    front = pareto.front(records, ("latency", "size"))
    assert sorted(r["number"] for r in front) == [0, 1, 2, 4]  # 3 is dominated by 1
    for a in front:
        assert not any(pareto.dominates((b["objectives"]["latency"], b["objectives"]["size"]),
                                        (a["objectives"]["latency"], a["objectives"]["size"])) for b in records)
    # latency first; 0.51 is within 3% of 0.5, and much smaller: it wins the tie on size
    assert pareto.choose(front, ("latency", "size"), 0.03)["number"] == 2
    assert pareto.choose(front, ("latency", "size"), 0.0)["number"] == 1
    assert pareto.choose(front, ("size", "latency"), 0.03)["number"] == 4


def test_closest_ranks_by_relative_excess():
    c = Constraints(max_score_drop=0.01)
    records = [rec(0, 1, 1, drop=0.05), rec(1, 1, 1, drop=0.02), rec(2, 1, 1, state="pruned", drop=0.015),
               rec(3, 1, 1, state="failed", drop=0.0)]
    assert [r["number"] for r in pareto.closest(records, c, 2)] == [2, 1]


@pytest.mark.parametrize("build", ["lenet5", "resnet", "depthwise", "transformer", "shrunk"])
def test_skeleton_round_trip_is_exact(build):
    from modelpress.search.skeleton import rebuild, skeleton
    from modelpress.zoo import DepthwiseCNN, LeNet5, TinyResNet, TinyTransformer

    torch.manual_seed(0)
    models = {"lenet5": (LeNet5, (1, 28, 28)), "resnet": (TinyResNet, (1, 16, 16)),
              "depthwise": (DepthwiseCNN, (1, 16, 16)), "transformer": (TinyTransformer, (8, 8)),
              "shrunk": (lambda: fakes.apply(LeNet5(), fakes.Config(rank_ratio=0.25), None).model, (1, 28, 28))}
    factory, shape = models[build]
    model = factory().eval()
    data, tensors = skeleton(model)
    back = rebuild(yaml.safe_load(yaml.safe_dump(data)), tensors).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert [n for n, _ in back.named_modules()] == [n for n, _ in model.named_modules()]


def test_skeleton_refuses_hooks_and_foreign_classes():
    from modelpress.search.skeleton import skeleton
    from modelpress.zoo import LeNet5

    hooked = LeNet5()
    hooked.features[0].register_forward_hook(lambda m, i, o: o)
    assert skeleton(hooked) is None
    with_callable = LeNet5()
    object.__setattr__(with_callable, "_callbacks", [lambda proto, task: proto])  # not plain data
    assert skeleton(with_callable) is None

    class Local(torch.nn.Module):
        pass

    outer = LeNet5()
    outer.extra = Local()
    assert skeleton(outer) is None


def test_prefix_cache_stores_on_disk_and_rebuilds(tmp_path):
    from modelpress.compress import Storage
    from modelpress.search.cache import PrefixCache
    from modelpress.zoo import LeNet5

    torch.manual_seed(0)
    applied = fakes.apply(LeNet5().eval(), fakes.Config(rank_ratio=0.25), None).then(
        facts={"note": {"layers": ["a", "b"]}, "ratio": 0.5}, storage=Storage("codebook", {"entropy": "huffman"}))
    example = {"x": torch.randn(2, 1, 28, 28).numpy()}
    assert PrefixCache(tmp_path).put("k1", applied, example)
    fresh = PrefixCache(tmp_path)  # another process: nothing in memory
    back = fresh.get("k1")
    assert fresh.hits == {"memory": 0, "disk": 1}
    x = torch.from_numpy(example["x"])
    with torch.no_grad():
        assert torch.equal(back.model(x), applied.model(x))
    assert back.facts == applied.facts and back.storage == applied.storage  # the step's data came back too
    (tmp_path / "k1" / "skeleton.json").write_text("{broken")
    assert PrefixCache(tmp_path).get("k1") is None  # damaged entries are recomputed, never trusted
    hooked = copy.deepcopy(applied)
    hooked.model.features[0].register_forward_hook(lambda m, i, o: o)
    cache = PrefixCache(tmp_path)
    assert not cache.put("k2", hooked, example) and not (tmp_path / "k2").exists()
    assert cache.get("k2") is not None  # still reused within the process
    # train hooks and ONNX rewrites are objects, not data: such an entry stays in memory only
    for name, objects in (("k3", {"train_hooks": (object(),)}), ("k4", {"onnx_rewrites": (lambda p, t: (p, {}),)})):
        assert not cache.put(name, applied.then(**objects), example) and not (tmp_path / name).exists()
        kept = cache.get(name)
        assert kept is not None and (kept.train_hooks or kept.onnx_rewrites)


def test_registry_overlay_is_undone_and_techniques_come_in_canonical_order():
    from modelpress import registry

    before = dict(registry.TECHNIQUES)
    with pytest.raises(RuntimeError):
        with registry.overlay("technique", {"shrink": fakes.MODULE}):  # what a search worker does with a job
            assert registry.module("technique", "shrink") is fakes
            raise RuntimeError("a failing trial")
    assert registry.TECHNIQUES == before and "shrink" not in registry.TECHNIQUES
    # structure first, recovery, then weight sharing and precision; unknown names after the built-in ones
    assert registry.in_order(["quantize", "shrink", "cluster", "distill", "prune", "lowrank", "finetune"]) == [
        "prune", "lowrank", "distill", "finetune", "cluster", "quantize", "shrink"]


def test_early_stop_threshold():
    from modelpress.search.trial import early_stop_threshold

    assert early_stop_threshold(None, None, 0.9, 100, 1000) is None
    assert early_stop_threshold(0.01, None, 0.9, 1000, 1000) == 0.01  # the whole set: no noise margin
    t = early_stop_threshold(0.01, None, 0.9, 500, 10000)
    assert 0.01 + 0.03 < t < 0.01 + 0.05  # three standard errors of a 0.9 accuracy on 500 samples
    assert early_stop_threshold(0.01, 0.002, 0.9, 500, 10000) == pytest.approx(0.012)
    assert early_stop_threshold(0.5, None, 12.0, 500, 10000) is None  # unknown scale, no margin: never stop


def test_pipelines_sharing_a_prefix_compute_it_once(fake_techniques, tmp_path, monkeypatch):
    from modelpress.search import trial
    from modelpress.search.cache import PrefixCache

    ctx = trial.context("digits")
    calls = []
    apply = fakes.apply
    monkeypatch.setattr(fakes, "apply", lambda m, c, t, tools=None: calls.append(c) or apply(m, c, t, tools))
    steps = [{"shrink": {"rank_ratio": 0.25}}, {"noise": {"scale": 0.0}}]
    first = parse_recipe({"task": "digits", "steps": steps})
    second = parse_recipe({"task": "digits", "steps": [steps[0], {"noise": {"scale": 0.02}}]})
    cache = PrefixCache(tmp_path, allowed=(ctx["model_package"],))
    applied, reused = trial.compress_cached(ctx, first, cache)
    assert reused == 0 and len(calls) == 1
    _, reused = trial.compress_cached(ctx, second, cache)
    assert reused == 1 and len(calls) == 1  # shrink(0.25) came from the cache
    fresh = PrefixCache(tmp_path, allowed=(ctx["model_package"],))  # a new process: the disk entries
    again, reused = trial.compress_cached(ctx, first, fresh)
    assert reused == 2 and len(calls) == 1 and fresh.hits["disk"] == 1
    x = torch.from_numpy(ctx["task"].example_inputs(4)["x"])
    with torch.no_grad():
        assert torch.equal(again.model(x), applied.model(x))
    assert again.facts == applied.facts and set(applied.facts) == {"ranks", "noise_scale"}


def test_seeds_reproduce_the_defaults_and_an_edited_space_continues(fake_techniques):
    import optuna

    sampler = optuna.samplers.TPESampler(n_startup_trials=2, multivariate=True, group=True, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    r = recipe(space={"techniques": ["shrink", "noise"], "shrink": {"rank_ratio": [0.5, 0.25]}})
    space = resolve(r.search, r)
    for params, cand in space.defaults():
        study.enqueue_trial(params)
        trial = study.ask()
        assert space.sample(trial) == cand  # the enqueued params are in the sampled distributions
        study.tell(trial, [1.0, 2.0])
    for i in range(4):
        trial = study.ask()
        space.sample(trial)
        study.tell(trial, [float(i), 1.0])
    # the same study continued with an edited list: 0.5 is gone, so stored values must not be reused
    narrowed = recipe(space={"techniques": ["shrink", "noise"], "shrink": {"rank_ratio": [0.05, 0.25]}})
    space = resolve(narrowed.search, narrowed)
    for i in range(6):
        trial = study.ask()
        cand = space.sample(trial)
        assert all(s["rank_ratio"] in (0.05, 0.25) for n, s in cand.steps if n == "shrink")
        study.tell(trial, [float(i), 1.0])


def test_choice_prefers_candidates_no_worse_than_every_default():
    # a measured case: 31 and 35 are 4% faster than 33 but larger than the cluster-only default; 33 beats every default
    front = [rec(31, 0.403, 338_259), rec(35, 0.408, 283_841), rec(33, 0.419, 46_588), rec(37, 0.436, 39_844)]
    defaults = [rec(1, 0.464, 439_271), rec(3, 1.502, 201_539)]
    assert pareto.choose(front, ("latency", "size"), 0.03)["number"] == 35
    assert pareto.choose(front, ("latency", "size"), 0.03, defaults)["number"] == 33
    # when no candidate beats every default, the plain lexicographic choice stands
    assert pareto.choose(front, ("latency", "size"), 0.03, [rec(9, 0.1, 10)])["number"] == 35
