"""modelpress.analyze: layer table, profile attribution, probes, sensitivity, bad input (advice: next file)."""

import numpy as np
import pytest
import torch
from torch import nn

from modelpress.analyze import AnalyzeConfig, _probes, analyze
from modelpress.analyze.layers import layer_table
from modelpress.analyze.profile import export_onnx, module_of, summarize
from modelpress.analyze.sensitivity import PROBES, sensitivity
from modelpress.errors import ConfigError, ModelpressError
from modelpress.task import Batches, Task
from modelpress.zoo import DepthwiseCNN, LeNet5, LeNet300100, TinyTransformer

FAST = AnalyzeConfig(samples=128, probes=("int8", "prune30", "lowrank"), batch_sizes=(1, 8), profile_runs=10)


def self_labelled(model, shape, n=192, seed=0):
    """A task whose labels are the model's own predictions: the fp32 model scores 1.0 and every probe's
    drop is the share of predictions it changes."""
    torch.manual_seed(seed)
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
    with torch.no_grad():
        y = model.eval()(torch.from_numpy(x)).argmax(-1).numpy()
    return Task(name=f"synthetic-{type(model).__name__}", build_model=lambda: model, input_names=("x",),
                output_names=("logits",), calib_data=Batches({"x": x[:64]}, batch_size=32),
                val_data=Batches({"x": x}, y, batch_size=64), test_data=Batches({"x": x}, y, batch_size=64),
                num_classes=10)


def model_and_task(cls, shape, seed=0):
    torch.manual_seed(seed)
    model = cls().eval()
    return model, self_labelled(model, shape, seed=seed)


def rows_by_name(table):
    return {r["name"]: r for r in table["rows"]}


# ---- layer table ----------------------------------------------------------------------------------

def test_layer_table_counts_lenet5_exactly():
    model, task = model_and_task(LeNet5, (1, 28, 28))
    table = layer_table(model, task)
    rows = rows_by_name(table)
    assert table["totals"]["params"] == sum(p.numel() for p in model.parameters()) == 431080
    # MACs per sample: output elements x (in channels x kernel) for a conv, out x in for a linear.
    assert rows["features.0"]["macs"] == 20 * 24 * 24 * 1 * 25
    assert rows["features.3"]["macs"] == 50 * 8 * 8 * 20 * 25
    assert rows["classifier.1"]["macs"] == 800 * 500
    assert rows["features.1"]["macs"] == 0
    assert rows["features.0"]["activation_bytes"] == 20 * 24 * 24 * 4
    assert sum(r["mac_share"] for r in table["rows"]) == pytest.approx(1.0)
    assert sum(r["param_share"] for r in table["rows"]) == pytest.approx(1.0)
    assert rows["classifier.3"]["is_output"] and not rows["classifier.1"]["is_output"]
    assert table["by_kind"]["conv"]["mac_share"] > 0.8 and table["by_kind"]["linear"]["param_share"] > 0.9


def test_layer_table_attention_own_ops_and_depthwise():
    model, task = model_and_task(TinyTransformer, (8, 8))
    rows = rows_by_name(layer_table(model, task))
    own = rows["blocks.0.attn (own ops)"]
    # q @ k^T and att @ v: 2 x (T x T x head_dim) per head, 4 heads of 16 over 8 tokens.
    assert own["kind"] == "attention" and own["macs"] == 2 * 8 * 8 * 64
    assert rows["blocks.0.attn.q"]["in_attention"] and not rows["blocks.0.ffn.0"]["in_attention"]
    assert rows["(model) (own ops)"]["params"] == 8 * 64  # the positional embedding
    dw_model, dw_task = model_and_task(DepthwiseCNN, (1, 16, 16))
    kinds = {r["name"]: r["kind"] for r in layer_table(dw_model, dw_task)["rows"]}
    assert kinds["blocks.0.0"] == "depthwise" and kinds["blocks.0.3"] == "conv"


def test_multihead_attention_macs():
    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0].mean(1)

    model = MHA().eval()
    rows = rows_by_name(layer_table(model, self_labelled(model, (5, 16))))
    t, e = 5, 16
    assert rows["attn (own ops)"]["macs"] == 4 * t * e * e + 2 * t * t * e
    assert rows["attn (own ops)"]["params"] == 3 * e * e + 3 * e


def test_model_that_cannot_run_names_the_layer():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Linear(33, 10))

        def forward(self, x):
            return self.body(x)

    task = self_labelled(LeNet300100().eval(), (1, 28, 28))
    with pytest.raises(ModelpressError, match=r"layer 'body\.2' \(Linear\)"):
        layer_table(Broken(), task)


class Spectrum(nn.Module):
    """A layer ONNX cannot express (an FFT)."""

    def forward(self, x):
        return torch.fft.rfft(x, n=2 * x.shape[-1] - 2).abs()


class WithFFT(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), Spectrum(), nn.Linear(32, 10))

    def forward(self, x):
        return self.body(x)


def test_export_failure_names_the_layer_and_analysis_goes_on():
    torch.manual_seed(0)
    model = WithFFT().eval()
    task = self_labelled(model, (16,))
    with pytest.raises(ModelpressError, match=r"ONNX export fails in layer 'body\.1' \(Spectrum\)"):
        export_onnx(model, task)
    result = analyze(task, model, AnalyzeConfig(samples=64, probes=("int8",), profile_runs=5))
    assert "body.1" in result["profile"]["error"]
    assert result["advice"]["recommendations"][0]["category"] == "blocker"
    assert [e["layer"] for e in result["sensitivity"]["layers"]] == ["body.0", "body.2"]


# ---- profile --------------------------------------------------------------------------------------

def test_module_of_reads_exported_scopes():
    modules = {"", "blocks", "blocks.0", "blocks.0.0", "blocks.0.ffn", "blocks.0.ffn.0", "blocks.0.attn",
               "blocks.0.attn.q", "layer1", "layer1.conv1", "a", "a.1", "a.1.x"}
    assert module_of("/blocks/blocks.0/blocks.0.0/Conv_kernel_time", modules) == "blocks.0.0"
    assert module_of("/blocks/blocks.0/ffn/ffn.0/MatMul_kernel_time", modules) == "blocks.0.ffn.0"
    assert module_of("/blocks/blocks.0/attn/q/MatMul", modules) == "blocks.0.attn.q"
    assert module_of("/blocks/blocks.0/attn/Softmax", modules) == "blocks.0.attn"
    assert module_of("fused /layer1/conv1/Conv_kernel_time", modules) == "layer1.conv1"
    assert module_of("/x/Gemm", modules) == "a.1.x"  # a ModuleDict entry called directly
    assert module_of("/Add", modules) == ""
    assert module_of("ReorderOutput_kernel_time", modules) is None


def _event(name, op, ts, dur, shape=None):
    args = {"op_name": op}
    if shape:
        args["output_type_shape"] = [{"float": shape}]
    return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": args}


def test_summarize_drops_warmup_and_attributes_fused_convs():
    rows = [{"name": "c", "module": "c", "kind": "conv", "out_channels": 20},
            {"name": "r", "module": "r", "kind": "other", "out_channels": None},
            {"name": "fc", "module": "fc", "kind": "linear", "out_channels": 10}]
    events = []
    for run in range(4):
        t = 1000 * run
        dur = 500 if run == 0 else 10  # the warm-up run is slow and must not count
        events.append({"cat": "Session", "name": "model_run", "ts": t, "dur": 3 * dur + 5})
        events.append(_event("/r/Relu_output_0_nchwc", "Conv", t + 1, 2 * dur, [1, 32, 4, 4]))  # conv fused into relu
        events.append(_event("ReorderOutput", "ReorderOutput", t + 2, dur))
        events.append(_event("/fc/Gemm", "Gemm", t + 3, dur))
    prof = summarize(events, 1, rows, {"", "c", "r", "fc"})
    assert prof["runs"] == 3
    assert prof["layers"] == {"c": 20.0, "(runtime-inserted)": 10.0, "fc": 10.0}
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0)
    assert prof["channel_padding"] == [{"layer": "c", "out_channels": 20, "runtime_channels": 32}]


def test_profile_on_onnxruntime_attributes_conv_time():
    model, task = model_and_task(LeNet5, (1, 28, 28))
    result = analyze(task, model, AnalyzeConfig(batch_sizes=(1,), profile_runs=10, sensitivity=False))
    prof = result["profile"]["batches"]["1"]
    assert {"Conv", "MaxPool"} <= {o["op"] for o in prof["ops"]}
    assert sum(o["share"] for o in prof["ops"]) == pytest.approx(1.0)
    conv_layers = {n["layer"] for n in prof["nodes"] if n["op"] == "Conv"}
    assert conv_layers == {"features.0", "features.3"}
    assert prof["run_us_median"] > 0 and 0 < prof["kernel_share_of_run"] <= 1


# ---- probes and sensitivity -----------------------------------------------------------------------

def test_fake_quantize_error_shrinks_with_bits_and_keeps_zero():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight[0, :5] = 0
    original = layer.weight.detach().clone()
    errors = {}
    for bits in (8, 4):
        q = nn.Linear(64, 32)
        q.load_state_dict(layer.state_dict())
        _probes.fake_quantize(q, bits)
        errors[bits] = float(((q.weight - original) ** 2).mean())
        assert torch.all(q.weight[0, :5] == 0)
        assert q.weight.unique(dim=None).numel() <= 32 * 2 ** bits  # at most 2^bits levels per channel
    sqnr_db = 10 * np.log10(float((original ** 2).mean()) / errors[8])
    assert sqnr_db > 35 and errors[4] > 10 * errors[8]


def test_zero_channels_and_half_rank():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 10, 3)
    norms = conv.weight.detach().reshape(10, -1).norm(dim=1)
    assert _probes.zero_channels(conv, 0.3) == 3
    zeroed = set(torch.nonzero(conv.weight.reshape(10, -1).abs().sum(1) == 0).flatten().tolist())
    assert zeroed == set(torch.argsort(norms)[:3].tolist()) and all(conv.bias[i] == 0 for i in zeroed)
    linear = nn.Linear(40, 30)
    assert _probes.half_rank(linear) == 15
    s = torch.linalg.svdvals(linear.weight.detach().double())
    assert s[14] / s[0] > 1e-3 and s[15] / s[0] < 1e-5  # rank 15, up to float32 rounding
    assert _probes.eligible("depthwise", "lowrank", nn.Conv2d(4, 4, 3, groups=4), False)


def test_sensitivity_probes_each_layer_with_labelled_fallbacks(monkeypatch):
    from modelpress import registry

    monkeypatch.setattr(registry, "TECHNIQUES", {})  # no technique registered: analyze's own probes stand in
    model, task = model_and_task(LeNet300100, (1, 28, 28))
    table = layer_table(model, task)
    sens = sensitivity(model, task, table, samples=128)
    assert sens["baseline_score"] == 1.0 and sens["samples"] == 128
    assert [e["layer"] for e in sens["layers"]] == ["net.1", "net.3", "net.5"]
    assert all(p["via"] == "probe" and "not registered" in p["note"] for p in sens["probes"].values())
    out = sens["layers"][-1]["results"]
    assert "model's output" in out["prune30"]["skipped"]
    for entry in sens["layers"]:
        for res in entry["results"].values():
            if "score" in res:
                assert res["drop"] == pytest.approx(1.0 - res["score"])
    before = [p.detach().clone() for p in model.parameters()]
    sensitivity(model, task, table, probes=("int4", "lowrank"), samples=64)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is not modified


def test_sensitivity_uses_registered_technique():
    from modelpress import registry

    if "lowrank" not in registry.TECHNIQUES:
        pytest.skip("the lowrank technique is not registered")
    model, task = model_and_task(LeNet300100, (1, 28, 28))
    sens = sensitivity(model, task, layer_table(model, task), probes=("lowrank",), samples=64)
    assert sens["probes"]["lowrank"]["via"] == "technique"
    assert sens["layers"][0]["results"]["lowrank"]["via"] == "lowrank"
    assert "score" in sens["layers"][0]["results"]["lowrank"]


def test_task_without_val_data_skips_sensitivity_with_a_note():
    model, task = model_and_task(LeNet300100, (1, 28, 28))
    # sensitivity decides on validation data: labelled test data does not stand in for it
    unlabelled = Task(name="nolabels", build_model=lambda: model, input_names=("x",), output_names=("logits",),
                      calib_data=task.calib_data, val_data=task.val_data.inputs_only(), test_data=task.test_data)
    sens = sensitivity(model, unlabelled, layer_table(model, unlabelled))
    assert "Sensitivity skipped" in sens["skipped"] and "no labels" in sens["skipped"]
    empty = Task(name="empty", build_model=lambda: model, input_names=("x",), output_names=("logits",),
                 calib_data=task.calib_data, val_data=None, test_data=task.test_data)
    result = analyze(empty, model, AnalyzeConfig(profile=False))
    assert "no validation data" in result["sensitivity"]["skipped"]
    assert result["advice"]["recommendations"]  # advice still comes from the layer table


def test_bad_config_is_a_clear_error():
    with pytest.raises(ConfigError, match="Unknown probe"):
        AnalyzeConfig(probes=("int3",))
    with pytest.raises(ConfigError, match="samples"):
        AnalyzeConfig(samples=0)
    assert set(AnalyzeConfig().probes) == set(PROBES)
