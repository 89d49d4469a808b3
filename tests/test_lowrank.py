"""The lowrank step: rank selection (energy, parameter ratio, sensitivity under one budget), the
per-layer method choice, the cost rule, recorded facts, ONNX export, and clear errors on bad input."""
import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from modelpress.compress import Tools, lowrank
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.export.onnx import to_onnx
from modelpress.task import Batches, Task
from modelpress.zoo import DepthwiseCNN, TinyTransformer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def task_for(shape, n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return Task(name="t", build_model=lambda: None, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x}, batch_size=32), val_data=Batches({"x": x}, y, batch_size=32),
                test_data=Batches({"x": x}, y, batch_size=32),
                train_data=Batches({"x": x}, y, batch_size=32, shuffle=True), num_classes=10)


def low_rank_linear(n_in, n_out, rank, noise=1e-4, seed=0):
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, rank, generator=g) @ torch.randn(rank, n_in, generator=g) / n_in ** 0.5
                           + noise * torch.randn(n_out, n_in, generator=g))
    return layer


def lowrank_apply(model, task, tools=Tools(), **settings):
    return lowrank.apply(model, parse(lowrank.Config, settings, "lowrank"), task, tools)


# ---- rank selection --------------------------------------------------------------------------------

def test_energy_picks_the_rank_rounded_up_to_a_multiple_of_8():
    model = nn.Sequential(low_rank_linear(96, 96, 12), nn.ReLU(), nn.Linear(96, 10))
    out = lowrank_apply(model, task_for((96,)), rank_by="energy", energy=0.999)
    assert out.facts["ranks"] == {"0": 16}  # 12 significant singular values -> 16
    assert isinstance(out.model[0], nn.Sequential) and out.model[0][0].weight.shape == (16, 96)
    assert "2" in out.facts["lowrank_skipped"]  # 96 -> 10: no multiple of 8 pays off


def test_energy_one_keeps_everything_and_so_saves_nothing():
    model = nn.Sequential(low_rank_linear(64, 64, 64), nn.ReLU(), nn.Linear(64, 10))
    out = lowrank_apply(model, task_for((64,)), rank_by="energy", energy=1.0)
    assert out.facts["ranks"] == {} and "0" in out.facts["lowrank_skipped"]
    assert out.facts["params_after"] == out.facts["params_before"]


def test_param_ratio_takes_the_largest_rank_within_the_ratio():
    model = nn.Sequential(nn.Linear(256, 256, bias=False), nn.ReLU(), nn.Linear(256, 256))
    out = lowrank_apply(model, task_for((256,)), rank_by="param_ratio", param_ratio=0.5)
    # r * (256 + 256) (+ 256 bias) <= 0.5 * 256 * 256 (+ 256 bias): r <= 64 without bias, r <= 63.75 with
    assert out.facts["ranks"] == {"0": 64, "2": 56}
    layer = out.facts["lowrank_layers"]["2"]
    assert layer["params"] == [256 * 256 + 256, 56 * 512 + 256] and layer["macs"] == [256 * 256, 56 * 512]


def test_sensitivity_spends_the_budget_where_the_error_falls_most():
    torch.manual_seed(0)
    # layer 0 is (almost) exactly rank 8, layer 2 is full rank: the budget should go to layer 2
    model = nn.Sequential(low_rank_linear(128, 128, 8), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(), nn.Linear(128, 10))
    out = lowrank_apply(model, task_for((128,)), rank_by="sensitivity", param_ratio=0.4)
    f = out.facts
    assert f["ranks"]["0"] == 8
    assert f["ranks"].get("2", 128) > 8
    assert all(r % 8 == 0 for r in f["ranks"].values())
    before = sum(v["params"][0] for v in f["lowrank_layers"].values())
    assert f["lowrank_budget"]["used"] <= f["lowrank_budget"]["budget"]
    assert f["params_before"] - f["params_after"] >= 0.5 * before  # the budget really saved parameters


def test_macs_budget_counts_multiply_accumulates_not_parameters():
    """A conv has few parameters but most of the MACs; a MAC budget must split it, and stay within budget."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 64),
                          nn.ReLU(), nn.Linear(64, 10))
    out = lowrank_apply(model, task_for((32, 8, 8), n=32), budget="macs", param_ratio=0.5)
    f = out.facts
    assert f["lowrank_budget"]["budget_of"] == "macs" and f["lowrank_budget"]["used"] <= f["lowrank_budget"]["budget"]
    assert "0" in f["ranks"]  # 9216 params but 590k MACs per sample, against 131k for the Linear
    layers = f["lowrank_layers"].values()
    assert sum(v["macs"][1] for v in layers) + sum(
        0 if n in f["lowrank_layers"] else {"0": 589824, "3": 131072}.get(n, 0) for n in ("0", "3")
    ) <= 0.5 * (589824 + 131072)


def test_conv_method_follows_the_weight_structure():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    separable = nn.Conv2d(32, 32, 3, padding=1)  # exactly spatially separable at rank 8
    channel_low = nn.Conv2d(32, 32, 3, padding=1)  # exactly Tucker (8, 8), spatially full
    with torch.no_grad():
        separable.weight.copy_(torch.einsum("rca,orb->ocab", torch.randn(8, 32, 3, generator=g),
                                            torch.randn(32, 8, 3, generator=g)))
        channel_low.weight.copy_(torch.einsum("rshw,or,is->oihw", torch.randn(8, 8, 3, 3, generator=g),
                                              torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)))
    model = nn.Sequential(separable, nn.ReLU(), channel_low, nn.ReLU(), nn.Flatten(), nn.Linear(32 * 64, 10))
    task = task_for((32, 8, 8), n=16)
    out = lowrank_apply(model, task, rank_by="energy", energy=0.9999, exclude=["5"])
    layers = out.facts["lowrank_layers"]
    assert layers["0"]["method"] == "spatial" and layers["0"]["ranks"] == [8]
    assert layers["2"]["method"] == "tucker2" and layers["2"]["ranks"] == [8, 8]
    x = torch.from_numpy(task.example_inputs(4)["x"])
    with torch.no_grad():
        torch.testing.assert_close(out.model(x), model(x), atol=1e-3, rtol=1e-3)


def test_a_rank_that_does_not_pay_off_leaves_the_layer_dense():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    out = lowrank_apply(model, task_for((64,)), ranks={"0": 32, "2": 8})
    f = out.facts
    assert f["ranks"] == {}  # 32 * 128 = 4096 MACs = 1.0x; 8 * 74 = 0.93x of 640
    assert "1.00x the MACs" in f["lowrank_skipped"]["0"] and "0.93x the MACs" in f["lowrank_skipped"]["2"]
    out = lowrank_apply(model, task_for((64,)), ranks={"0": 24}, max_cost_ratio=0.8)
    assert out.facts["ranks"] == {"0": 24}  # 0.75x: explicit ranks are used as given, not rounded


def test_measured_cost_keeps_exactly_the_layers_that_time_faster():
    """With cost: measured, each layer the MAC rule accepts is timed on the recipe's runtime (the pipeline's
    Tools, here ONNX Runtime); it is split only when its measured ratio is within max_cost_ratio, and the
    reason names the measurement otherwise."""
    from modelpress.layer_timing import tools_for
    from modelpress.recipe import parse_recipe

    tools = tools_for(parse_recipe({"task": "t", "runtime": {"backend": "onnxruntime", "threads": 1}}))
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    out = lowrank_apply(model, task_for((256,)), tools, rank_by="param_ratio", param_ratio=0.25, cost="measured",
                        measure_batch_size=8)
    f = out.facts
    if "0" in f["ranks"]:
        assert 0 < f["lowrank_layers"]["0"]["measured_latency_ratio"] <= 0.8
    else:
        reason = f["lowrank_skipped"]["0"]
        assert "measured" in reason and "latency on the runtime at batch 8" in reason


def test_measured_cost_decides_on_what_the_time_ratio_reports():
    """The rule itself, on a time_ratio that reports fixed ratios: within max_cost_ratio the split is kept
    (the ratio recorded), above it the layer stays dense with the measurement as the reason."""
    calls = []

    def time_ratio(original, replacement, x):
        calls.append((type(replacement).__name__, x.shape, x.dtype))
        return {256: 0.5, 128: 0.95}[original.in_features]

    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 128))
    out = lowrank_apply(model, task_for((256,)), Tools(time_ratio=time_ratio), rank_by="param_ratio",
                        param_ratio=0.25, cost="measured", measure_batch_size=8, include=["0", "4"])
    f = out.facts
    assert f["lowrank_layers"]["0"]["measured_latency_ratio"] == 0.5 and "0" in f["ranks"]
    assert "4" not in f["ranks"] and "measured 0.95x" in f["lowrank_skipped"]["4"]
    assert isinstance(out.model[4], nn.Linear) and isinstance(out.model[0], nn.Sequential)
    assert calls == [("Sequential", (8, 256), np.float32), ("Sequential", (8, 128), np.float32)]
    with pytest.raises(ConfigError, match="cost: measured.*Tools\\(time_ratio"):
        lowrank_apply(model, task_for((256,)), rank_by="param_ratio", param_ratio=0.25, cost="measured")


# ---- whole models --------------------------------------------------------------------------------

def test_transformer_projections_are_really_split_in_onnx():
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    task = task_for((8, 8))
    out = lowrank_apply(model, task, include=["blocks.*.ffn.*"], rank_by="param_ratio", param_ratio=0.4)
    f = out.facts
    assert set(f["ranks"]) == {"blocks.0.ffn.0", "blocks.0.ffn.2", "blocks.1.ffn.0", "blocks.1.ffn.2"}
    assert f["params_before"] - f["params_after"] >= 0.6 * 4 * 64 * 256 * 0.9
    ops = lambda m: sum(n.op_type in ("MatMul", "Gemm") for n in to_onnx(m, task).graph.node)  # noqa: E731
    assert ops(out.model) == ops(model) + 4
    proto = to_onnx(out.model, task)
    onnx.checker.check_model(proto)
    weights = {tuple(i.dims) for i in proto.graph.initializer}
    assert (64, 256) not in weights and (256, 64) not in weights  # no dense FFN weight survives
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = task.example_inputs(4)["x"]
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"x": x})[0], out.model(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_input_model_is_not_modified():
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    before = copy.deepcopy(model.state_dict())
    out = lowrank_apply(model, task_for((128,)), rank_by="param_ratio", param_ratio=0.3)
    assert out.model is not model and isinstance(model[0], nn.Linear)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_recovery_lowers_the_loss_it_trains_on():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    task = task_for((64,), n=256)
    cfg = dict(include=["1"], rank=8, max_cost_ratio=1.0)
    plain, tuned = lowrank_apply(model, task, **cfg), lowrank_apply(model, task, recover_epochs=3, recover_lr=3e-3,
                                                                    recover_distill=0.0, **cfg)
    x, y = (torch.from_numpy(a) for a in (task.train_data.arrays["x"], task.train_data.targets))
    with torch.no_grad():
        loss = [nn.functional.cross_entropy(m.model(x), y).item() for m in (plain, tuned)]
    assert loss[1] < loss[0]
    assert tuned.facts["ranks"] == {"1": 8}


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, needle", [
    ({"rank": 0}, "rank must be at least 1"),
    ({"ranks": {"fc": 0}}, "ranks['fc'] must be at least 1"),
    ({"energy": 0.0}, "energy must be in (0, 1]"),
    ({"energy": 1.5}, "energy must be in (0, 1]"),
    ({"param_ratio": 1.0}, "param_ratio must be in (0, 1)"),
    ({"rank_by": "entropy"}, "must be one of"),
    ({"conv_method": "cp"}, "must be one of"),
])
def test_bad_settings_fail_clearly(settings, needle):
    with pytest.raises(ConfigError) as e:
        parse(lowrank.Config, settings, "lowrank")
    assert needle in str(e.value)


def test_rank_above_the_layer_limit_names_the_layer_and_limit():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(ConfigError, match=r"Rank 40 is too large for layer '0' \(Linear 64 -> 32\).*svd <= 32"):
        lowrank_apply(model, task_for((64,)), ranks={"0": 40})


@pytest.mark.parametrize("include, needle", [
    (["blocks.0.norm1"], "'blocks.0.norm1' cannot be factorized: a LayerNorm"),
    (["blocks.0.ffn"], "try 'blocks.0.ffn.*'"),
    (["nothing.here"], "Eligible layers: embed, blocks.0.attn.q"),
])
def test_include_of_a_layer_that_cannot_be_factorized(include, needle):
    with pytest.raises(ConfigError) as e:
        lowrank_apply(TinyTransformer(), task_for((8, 8)), include=include)
    assert needle in str(e.value)


def test_depthwise_convolution_named_in_the_recipe_is_refused():
    with pytest.raises(ConfigError, match="depthwise Conv2d"):
        lowrank_apply(DepthwiseCNN(), task_for((1, 16, 16)), include=["blocks.0.0"])


def test_multihead_attention_weights_are_left_alone():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    with pytest.raises(ConfigError, match="belongs to an nn.MultiheadAttention"):
        lowrank_apply(Model(), task_for((8, 64)), include=["attn.out_proj"])
