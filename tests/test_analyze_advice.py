"""modelpress.analyze: advice (per model kind, hardware, sensitive layers, steps that apply) and output files."""
import json
import xml.etree.ElementTree as ET

import pytest
import torch

from modelpress.analyze import AnalyzeConfig, analyze, svg_plots, write
from modelpress.analyze._hardware import hardware_advice
from modelpress.analyze.advise import advise
from modelpress.analyze.layers import layer_table
from modelpress.zoo import DepthwiseCNN, LeNet300100, TinyTransformer

from .test_analyze import FAST, model_and_task


def trained(name: str):
    """A trained reference model and its task: advice is about models whose predictions have margins (an
    untrained model's are so thin that any int8 noise flips them, and no step is worth advising)."""
    from modelpress.task import load_task

    task = load_task(name)
    return task.build_model(), task


@pytest.fixture(scope="module")
def conv_analysis():
    model, task = trained("fashion-mnist:lenet5")
    return model, task, analyze(task, model, FAST)


@pytest.fixture(scope="module")
def mlp_analysis():
    model, task = trained("fashion-mnist:lenet-300-100")
    return model, task, analyze(task, model, FAST)


# ---- advice -----------------------------------------------------------------------------------------

def titles(result):
    return [r["title"] for r in result["advice"]["recommendations"]]


def test_advice_differs_between_conv_heavy_and_linear_heavy_models(conv_analysis, mlp_analysis):
    conv, mlp = conv_analysis[2], mlp_analysis[2]

    assert "conv-heavy" in conv["advice"]["model_kind"] and "linear-heavy" not in conv["advice"]["model_kind"]
    assert "linear-heavy" in mlp["advice"]["model_kind"] and "conv-heavy" not in mlp["advice"]["model_kind"]
    # Conv model: time is in the convolutions -> structured channel pruning of conv layers only.
    prune = next(r for r in conv["advice"]["recommendations"] if "convolution channels" in r["title"])
    assert prune["evidence"]["conv_mac_share"] > 0.8
    if prune["step"]:
        assert set(prune["step"]["prune"]["include"]) <= {"features.0", "features.3"}
    # ... while its size is in one linear layer, which the advice says is not where the time goes.
    size = next(r for r in conv["advice"]["recommendations"] if "for size" in r["title"])
    assert "not where the time goes" in size["title"] and list(size["evidence"]["layers"]) == ["classifier.1"]
    # Linear model: int8 on the linear layers and (half-rank MACs 0.69x) factorization; no conv pruning.
    assert any("linear layers to int8" in t for t in titles(mlp))
    assert not any("convolution" in t for t in titles(mlp))
    lin = next(r for r in mlp["advice"]["recommendations"] if "linear layers to int8" in r["title"])
    assert lin["evidence"]["linear_mac_share"] == pytest.approx(1.0)
    assert conv["advice"]["summary"] != mlp["advice"]["summary"]


def test_advice_for_depthwise_and_attention_models():
    for cls, shape, needle in ((DepthwiseCNN, (1, 16, 16), "depthwise"), (TinyTransformer, (8, 8), "Attention")):
        model, task = model_and_task(cls, shape)
        result = analyze(task, model, AnalyzeConfig(sensitivity=False, batch_sizes=(1,), profile_runs=10))
        assert any(needle in t for t in titles(result)), titles(result)


def test_advice_excludes_sensitive_layers_and_orders_steps():
    model, task = model_and_task(LeNet300100, (1, 28, 28))
    table = layer_table(model, task)
    d = {"net.1": 0.0, "net.3": 0.05, "net.5": 0.001}  # net.3 is sensitive to int8
    sens = {"samples": 1000, "resolution": 0.001,
            "layers": [{"layer": n, "results": {"int8": {"drop": v}, "lowrank": {"drop": 0.0}}} for n, v in d.items()]}
    out = advise(table, None, sens, {"flags": {}, "gpus": []}, tolerance=0.005)
    lin = next(r for r in out["recommendations"] if "linear layers to int8" in r["title"])
    assert lin["evidence"]["sensitive_layers"] == ["net.3"] and lin["step"]["quantize"]["exclude"] == ["net.3"]
    names = [next(iter(s)) for s in out["steps"]]
    assert names == sorted(names, key=["prune", "lowrank", "distill", "cluster", "quantize"].index)


@pytest.mark.parametrize("flags,gpus,precision", [
    ({"avx512_vnni": True, "avx512f": True}, [], "int8"),
    ({"amx_int8": True, "amx_bf16": True}, [], "int8"),
    ({"avx512_bf16": True}, [], "bf16"),
    ({"avx2": True}, [], "fp32"),
    ({}, ["NVIDIA H100"], "fp16"),
])
def test_hardware_advice(flags, gpus, precision):
    recs = hardware_advice({"flags": flags, "gpus": gpus, "model": "test CPU"}, ["conv-heavy"], None, None,
                           {"time_share": {}})
    assert recs[0]["precision"] == precision
    if gpus:
        assert recs[0]["runtime"] == "tensorrt" and "H100" in recs[0]["reason"]
    for f, on in flags.items():
        if on and precision in ("int8", "bf16"):
            assert f in recs[0]["evidence"]["flags"]


def test_one_flipped_sample_is_not_sensitivity():
    from modelpress.analyze._evidence import split_tolerant

    sens = {"resolution": 1 / 128, "layers": [{"layer": n, "results": {"int8": {"drop": d}}}
                                              for n, d in (("a", 0.0), ("b", 1 / 128), ("c", 2 / 128))]}
    assert split_tolerant(sens, "int8", ["a", "b", "c"], 0.005)[:2] == (["a", "b"], ["c"])
    sens["resolution"] = 1 / 1000
    assert split_tolerant(sens, "int8", ["a", "b", "c"], 0.005)[:2] == (["a"], ["b", "c"])


def test_timing_advice_names_the_batch_size_that_was_profiled():
    prof = {"batch_size": 32, "run_us_median": 1880.0, "kernel_share_of_run": 0.8}
    recs = hardware_advice({"flags": {}, "gpus": [], "model": "test CPU"}, [], prof, prof, {"time_share": {}})
    rec = next(r for r in recs if r["title"].startswith("Judge speedups"))
    assert rec["reason"].startswith("At batch 32 one inference takes 1880 µs")
    assert rec["evidence"]["run_us_batch32"] == 1880.0 and "run_us_batch1" not in rec["evidence"]


# ---- output -----------------------------------------------------------------------------------------

def test_recommended_steps_run_through_the_techniques(conv_analysis, mlp_analysis):
    """The steps a search would start from are valid recipe steps that the registered techniques apply."""
    import copy

    from modelpress import registry
    from modelpress.compress import Applied
    from modelpress.config import parse

    for model, task, result in (conv_analysis, mlp_analysis):
        steps = result["advice"]["steps"]
        assert steps, result["advice"]["recommendations"]
        assert [next(iter(s)) for s in steps] == registry.in_order(next(iter(s)) for s in steps)  # canonical order
        candidate = Applied.of(copy.deepcopy(model))
        for step in steps:
            (name, settings), = step.items()
            mod = registry.module("technique", name)
            config = parse(mod.Config, settings, name)
            if name in ("distill", "finetune"):
                continue  # training steps: valid config is enough here
            candidate = mod.apply(candidate, config, task)
        out = candidate.model(torch.from_numpy(task.example_inputs(2)["x"]))
        assert out.shape == (2, 10)


def test_write_json_and_self_contained_svgs(tmp_path, conv_analysis):
    result = conv_analysis[2]
    paths = write(result, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["analysis.json", "layers.svg", "op_time.svg", "sensitivity.svg"]
    loaded = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert loaded["layers"]["totals"]["params"] == 431080 and loaded["advice"]["recommendations"]
    svgs = svg_plots(result)
    assert set(svgs) == {"sensitivity", "op_time", "layers"}
    for name, svg in svgs.items():
        root = ET.fromstring(svg)  # well-formed XML
        assert root.tag.endswith("svg") and "href" not in svg and "<script" not in svg
    assert "features.3" in svgs["sensitivity"] and "Conv" in svgs["op_time"]
