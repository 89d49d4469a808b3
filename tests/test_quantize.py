"""quantize: configs and bad input, every mode on real and small models, the ONNX int8 graph that ONNX
Runtime actually runs, and the op precisions the runtime reads off the artifact."""
import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from modelpress.compress import quantize
from modelpress.compress._quant.explain import explain_slowdown
from modelpress.compress.quantizer import WeightSpec, fake_quant
from modelpress.config import parse
from modelpress.errors import ConfigError, ModelpressError
from modelpress.evaluate import evaluate, predict_fn, torch_predict
from modelpress.export import onnx as onnx_export
from modelpress.result import Result
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.runtime.onnxruntime_ops import optimized_graph
from modelpress.task import Batches
from modelpress.zoo import DepthwiseCNN, LeNet5, TinyResNet, TinyTransformer

from .test_contracts import small_task


def cfg(**kw):
    return parse(quantize.Config, kw, "quantize")


def run_onnx(applied, task, tmp_path, **export):
    """Export an ``Applied`` to ONNX with its rewrites (the int8 graph) and open it on ONNX Runtime."""
    art = onnx_export.export(applied.model, task, tmp_path, onnx_export.Config(**export),
                             rewrites=applied.onnx_rewrites)
    return art, open_session(art)


def measured_facts(applied, art):
    """The facts as the pipeline reports them: the technique's, the rewrite's (kept in the manifest) and the op
    precisions ONNX Runtime reads off the artifact; planned int8 layers it runs in float join fallback_layers."""
    from modelpress.pipeline import runtime_fallbacks
    from modelpress.runtime.onnxruntime import op_precisions

    modules = {n for n, _ in applied.model.named_modules()}
    f = {**applied.facts, **art.manifest.get("facts", {}), **op_precisions(art, RuntimeConfig(), modules)}
    f["fallback_layers"] = {**f.get("fallback_layers", {}), **runtime_fallbacks(f)}
    return f


def result_of(latency_ratio, verdicts, facts, threads=1, streams=1):
    """A Result holding only what ``quantize.explain`` reads (the other fields are not measured here)."""
    names = {f.name for f in dataclasses.fields(Result)}
    return Result(**{**dict.fromkeys(names), "facts": facts, "notes": [], "violations": [], "threads": threads,
                     "streams": streams, "latency_ratio": latency_ratio, "latency_verdict": verdicts})


def on_grid(w: torch.Tensor, spec: WeightSpec) -> bool:
    return torch.allclose(fake_quant(w, spec), w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("settings, needle", [
    ({"bits": 1}, "'quantize.bits' must be between 2 and 8"),
    ({"bits": 9, "mode": "weight_only"}, "'quantize.bits' must be between 2 and 8"),
    ({"bits": 4}, "needs bits: 8.*use mode: weight_only"),
    ({"group_size": 32}, "group_size' applies to mode: weight_only"),
    ({"mode": "weight_only", "group_size": 32, "per_channel": False}, "needs per_channel: true"),
    ({"symmetric": False}, "needs symmetric: true"),
    ({"calibration": "kl"}, "must be one of"),
    ({"mode": "fp8"}, "must be one of"),
    ({"calibraton": "mse"}, "Did you mean 'calibration'"),
])
def test_bad_settings_fail_clearly(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        cfg(**settings)


def test_bad_layers_are_named():
    model, task = TinyTransformer().eval(), small_task((8, 8))
    with pytest.raises(ConfigError, match="'nope.*' .*matches no quantizable layer.*blocks.0.attn.q"):
        quantize.apply(model, cfg(include=["nope.*"]), task)
    with pytest.raises(ConfigError, match="per_channel' needs layers with output channels.*'norm' \\(LayerNorm\\), whose weight is 1-D"):
        quantize.apply(model, cfg(include=["norm"]), task)
    broken = LeNet5().eval()
    with torch.no_grad():
        broken.classifier[1].weight[3, 3] = float("inf")
    before = broken.state_dict()["features.0.weight"].clone()
    with pytest.raises(ModelpressError, match="'classifier.1.weight' holds NaN or Inf"):
        quantize.apply(broken, cfg(), small_task((1, 28, 28)))
    assert torch.equal(broken.state_dict()["features.0.weight"], before)  # nothing was modified


def test_bad_data_is_named():
    task = small_task((1, 28, 28))
    empty = Batches({"x": np.zeros((0, 1, 28, 28), np.float32)}, batch_size=16)
    with pytest.raises(ModelpressError, match="calib_data is empty"):
        quantize.apply(LeNet5().eval(), cfg(), _replace(task, calib_data=empty))
    quantize.apply(LeNet5().eval(), cfg(mode="weight_only"), _replace(task, calib_data=empty))  # needs no calibration
    x = task.calib_data.arrays["x"].copy()
    x[5, 0, 3, 3] = np.nan
    with pytest.raises(ModelpressError, match="input of layer 'features.0'.*NaN or Inf"):
        quantize.apply(LeNet5().eval(), cfg(), _replace(task, calib_data=Batches({"x": x}, batch_size=16)))


def _replace(task, **kw):
    import dataclasses

    return dataclasses.replace(task, **kw)


def test_static_digits_runs_int8_on_onnxruntime(digits_task, digits_model, tmp_path):
    q = quantize.apply(copy.deepcopy(digits_model), cfg(), digits_task)
    f = q.facts
    assert f["mode"] == "static" and f["bits"] == 8 and f["folded_batchnorm"] == ["features.1", "features.4"]
    assert f["weight_granularity"]["features.0"] == "channel"  # per-channel convolutions cost nothing
    assert "int8_ops" not in f  # what runs in int8 is read off the artifact, never claimed by the technique
    from modelpress.doctor import int8_dot_product

    bits = f.get("int8_weight_bits", 8)  # 7 where the CPU's int8 kernels need a reduced range (reduce_range: auto)
    assert bits == (8 if int8_dot_product() else 7)
    for name, granularity in f["weight_granularity"].items():
        assert on_grid(q.model.get_submodule(name).weight.detach(), WeightSpec(bits, granularity=granularity))
    assert len(q.onnx_rewrites) == 1 and q.storage is None
    art, session = run_onnx(q, digits_task, tmp_path / "int8")
    assert art.manifest["facts"]["int8_layers"].keys() == f["layer_bits"].keys()  # the rewrite found every layer
    f = measured_facts(q, art)  # what ONNX Runtime really runs
    assert f["fallback_layers"] == {} and f["float_ops"] == []
    assert {op.split(": ")[1] for op in f["int8_ops"]} >= {"QLinearConv", "QGemm"}
    ran = {n.op_type for n in optimized_graph(__import__("onnx").load(str(art.path))).graph.node}
    assert not ran & {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul"}  # no float matrix work left
    fp32_art = onnx_export.export(digits_model, digits_task, tmp_path / "fp32")
    assert art.size_bytes <= 0.3 * fp32_art.size_bytes
    base = evaluate(predict_fn(open_session(fp32_art)), digits_task, digits_task.test_data)
    assert base - evaluate(predict_fn(session), digits_task, digits_task.test_data) <= 0.01


def test_linear_layers_go_per_channel_only_where_it_pays(tmp_path):
    torch.manual_seed(0)
    model, task = LeNet5().eval(), small_task((1, 28, 28))
    with torch.no_grad():
        model.classifier[1].weight[7] *= 30  # one loud output channel: a single scale would flatten the rest
    f = quantize.apply(model, cfg(), task).facts["weight_granularity"]
    assert f == {"features.0": "channel", "features.3": "channel", "classifier.1": "channel", "classifier.3": "tensor"}
    always = quantize.apply(model, cfg(per_channel_min_gain_db=0), task).facts["weight_granularity"]
    assert set(always.values()) == {"channel"}
    never = quantize.apply(model, cfg(per_channel=False), task)
    assert set(never.facts["weight_granularity"].values()) == {"tensor"}
    art, _ = run_onnx(never, task, tmp_path, opset=12)  # per-tensor QDQ needs no opset 13
    assert art.size_bytes > 0


@pytest.mark.parametrize("build, shape", [(TinyResNet, (1, 16, 16)), (DepthwiseCNN, (1, 16, 16)),
                                          (TinyTransformer, (8, 8))], ids=["resnet", "depthwise", "transformer"])
def test_static_leaves_no_planned_layer_in_float(build, shape, tmp_path):
    torch.manual_seed(0)
    model, task = build().eval(), small_task(shape)
    q = quantize.apply(copy.deepcopy(model), cfg(calibration="minmax"), task)
    art, session = run_onnx(q, task, tmp_path)
    f = measured_facts(q, art)
    assert f["fallback_layers"] == {}
    planned = set(f["layer_bits"])
    assert set(f["int8_layers"]) == planned
    assert planned <= {op.split(": ")[0] for op in f["int8_ops"]}
    x = task.example_inputs(16)
    ref = model(torch.from_numpy(x["x"])).detach().numpy()
    out = session.run(x)[0]
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    assert cos.min() > 0.98


def test_dynamic_transformer_is_close_to_fp32(tmp_path):
    from modelpress.task import load_task

    task = load_task("digits:transformer")
    model = task.build_model()
    q = quantize.apply(copy.deepcopy(model), cfg(mode="dynamic"), task)
    art, session = run_onnx(q, task, tmp_path)
    f = measured_facts(q, art)
    assert any(op.endswith("DynamicQuantizeMatMul") for op in f["int8_ops"]) and f["fallback_layers"] == {}
    from modelpress.evaluate import compare

    agreement = compare(torch_predict(model, task), predict_fn(session), task.test_data, task.output_kinds,
                        task.output_names)
    assert agreement["logits"]["cosine"] >= 0.99
    cnn = quantize.apply(LeNet5().eval(), cfg(mode="dynamic"), small_task((1, 28, 28)))
    assert "ConvInteger" in cnn.facts["fallback_layers"]["features.0"]  # convolutions stay float, with the reason


def test_weight_only_mixed_precision_falls_back_sensitive_layers(digits_task, digits_model):
    val = digits_task.val_data  # the fallback decides on validation data
    plain = quantize.apply(copy.deepcopy(digits_model), cfg(mode="weight_only", bits=2), digits_task).model
    base = evaluate(torch_predict(digits_model, digits_task), digits_task, val)
    assert base - evaluate(torch_predict(plain, digits_task), digits_task, val) > 0.01  # 2 bits everywhere costs
    q = quantize.apply(copy.deepcopy(digits_model), cfg(mode="weight_only", bits=2, max_score_drop=0.01), digits_task)
    model, f = q.model, q.facts
    assert f["fallback_layers"] and set(f["fallback_layers"]) <= set(f["layer_bits"])
    assert all(f["layer_bits"][n] > 2 for n in f["fallback_layers"]) and 2 in f["layer_bits"].values()
    assert f["estimated_score_drop"] <= 0.01
    assert base - evaluate(torch_predict(model, digits_task), digits_task, val) <= 0.01
    assert q.storage is not None and q.storage.encoding == "packed" and not q.onnx_rewrites  # stored low-bit
    for name, bits in f["layer_bits"].items():
        assert bits == 32 or on_grid(model.get_submodule(name).weight.detach(), WeightSpec(bits))


def test_qat_trains_through_fake_quantization(digits_task, digits_model, tmp_path):
    task = _replace(digits_task, train_data=digits_task.train_data.take(320))  # 10 steps keep the test short
    q = quantize.apply(copy.deepcopy(digits_model), cfg(mode="qat", qat_epochs=1, qat_lr=1e-4), task)
    w0, w1 = digits_model.classifier[1].weight, q.model.classifier[1].weight
    spec = WeightSpec(q.facts.get("int8_weight_bits", 8), granularity=q.facts["weight_granularity"]["classifier.1"])
    assert not torch.allclose(fake_quant(w0.detach(), spec), w1)  # training moved the weights
    assert on_grid(w1.detach(), spec)
    art, session = run_onnx(q, digits_task, tmp_path)
    base = evaluate(torch_predict(digits_model, digits_task), digits_task, digits_task.test_data)
    assert base - evaluate(predict_fn(session), digits_task, digits_task.test_data) <= 0.01
    assert measured_facts(q, art)["fallback_layers"] == {}


def test_runtime_names_float_layers_and_explains_slowdown(tmp_path):
    task = small_task((1, 28, 28))
    q = quantize.apply(LeNet5().eval(), cfg(exclude=["classifier.3"]), task)
    art, _ = run_onnx(q, task, tmp_path)
    f = measured_facts(q, art)
    assert "classifier.3: Gemm" in f["float_ops"] and not any(op.startswith("classifier.3") for op in f["int8_ops"])
    assert "classifier.3" not in f["int8_layers"]
    reasons = explain_slowdown({"1": 1.4, "32": 0.6}, f, cpu_flags={"avx512_vnni": False})
    assert "batch is too small" in reasons[0] and any("VNNI" in r for r in reasons)
    assert any("Missing int8 kernels" in r and "classifier.3" in r for r in reasons)
    assert quantize.explain(result_of({"1": 0.5}, {"1": "faster"}, f)) == []
    slower = result_of({"1": 1.4, "32": 0.6}, {"1": "slower", "32": "faster"}, f)
    assert "batch is too small" in quantize.explain(slower)[0]
    # a ratio above 1 whose rounds overlap 1.0 is no measurable difference: nothing to explain
    assert quantize.explain(result_of({"1": 1.1}, {"1": "no measurable difference"}, f)) == []
    assert any("streams: 2" in r for r in explain_slowdown({"32": 1.1}, f, 2, 1, {"avx512_vnni": True}))
    assert not any("streams" in r for r in explain_slowdown({"32": 1.1}, f, 2, 2, {"avx512_vnni": True}))


@pytest.mark.parametrize("fmt", ["torch", "executorch", "tflite"])
def test_int8_graph_is_refused_by_exporters_that_cannot_express_it(fmt, tmp_path):
    from modelpress.pipeline import export_model
    from modelpress.recipe import parse_recipe

    task = small_task((1, 28, 28))
    q = quantize.apply(LeNet5().eval(), cfg(), task)
    recipe = parse_recipe({"task": "digits", "steps": [{"quantize": {}}], "export": {"format": fmt},
                           "runtime": {"backend": fmt}})
    with pytest.raises(ModelpressError, match=f"'{fmt}' exporter cannot express.*format 'onnx' or 'openvino'"):
        export_model(q, task, recipe, tmp_path / "artifact")
    assert not (tmp_path / "artifact").exists()  # refused before anything was written


def test_old_opset_is_refused(tmp_path):
    task = small_task((1, 28, 28))
    q = quantize.apply(LeNet5().eval(), cfg(), task)
    with pytest.raises(ModelpressError, match="opset 13 or newer.*opset 12"):
        run_onnx(q, task, tmp_path, opset=12)


def test_import_stays_light():
    code = "import sys, modelpress.compress.quantize; print('onnxruntime' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_later_training_keeps_weights_on_their_grid(digits_task, digits_model):
    from modelpress.train import TrainConfig, fit

    q = quantize.apply(digits_model, cfg(mode="weight_only", bits=4), digits_task)
    before = q.model.classifier[1].weight.detach().clone()
    fit(q.model, digits_task.train_data.take(64), TrainConfig(epochs=1, lr=1e-2), hooks=q.train_hooks)
    assert not torch.equal(before, q.model.classifier[1].weight)  # training moved it ...
    for name in q.facts["layer_bits"]:  # ... from grid point to grid point
        assert on_grid(q.model.get_submodule(name).weight.detach(), WeightSpec(4))


def test_bias_correction_removes_the_mean_error_rounding_adds():
    from modelpress.compress._quant.bias import correct_bias
    from modelpress.compress._quant.layers import batches_of, calibrate, select, weight_specs, wrap
    from modelpress.train import forward, to_tensors

    torch.manual_seed(0)
    model, task = LeNet5().eval(), small_task((1, 28, 28))
    layers = select(model, (), (), True)
    wrapped = wrap(model, layers, weight_specs(layers, cfg(per_channel=False)), "static")
    calibrate(model, wrapped, batches_of(task.calib_data, 64), task.input_names, "minmax", 99.99)
    original = {n: m.bias.detach().clone() for n, m in layers.items()}

    def mean_error() -> dict[str, torch.Tensor]:
        """Per layer and output channel: mean of (float layer with its original bias − quantized layer)."""
        sums: dict[str, list] = {}

        def hook(name):
            def record(module, args, y):
                float_out = module.layer(args[0]) - module.layer.bias.view(-1, *([1] * (y.dim() - 2))) + \
                    original[name].view(-1, *([1] * (y.dim() - 2)))
                d = (float_out - y).transpose(0, 1).reshape(y.shape[1], -1)
                sums.setdefault(name, []).append(d.mean(1))
            return record

        hooks = [q.register_forward_hook(hook(n)) for n, q in wrapped.items()]
        with torch.no_grad():
            for x in batches_of(task.calib_data, 64):
                forward(model, to_tensors(x), task.input_names)
        for h in hooks:
            h.remove()
        return {n: torch.stack(v).mean(0) for n, v in sums.items()}

    before = mean_error()
    shifts = correct_bias(model, wrapped, batches_of(task.calib_data, 64), task.input_names)
    after = mean_error()
    assert set(shifts) == set(layers) and all(float(v.abs().max()) > 0 for v in shifts.values())
    # channels whose mean error is clearly not noise get it removed: less is left in every layer, and in all
    # layers together a small part of what rounding added
    assert all(after[n].norm() < before[n].norm() for n in layers), (before, after)
    assert sum(after[n].norm() for n in layers) < 0.5 * sum(before[n].norm() for n in layers)
    assert "bias_correction" in quantize.apply(LeNet5().eval(), cfg(), task).facts
    assert "bias_correction" not in quantize.apply(LeNet5().eval(), cfg(bias_correction=False), task).facts


def test_layers_back_in_float_keep_their_original_bias():
    from modelpress.task import Task

    torch.manual_seed(0)
    model = LeNet5().eval()
    x = np.random.default_rng(0).standard_normal((96, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(-1).numpy()  # labels: the float model's own answers
    task = Task(name="self-labelled", build_model=lambda: model, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x[:32]}, batch_size=16), val_data=Batches({"x": x}, y, batch_size=32),
                test_data=Batches({"x": x}, y, batch_size=32),
                num_classes=10)
    # activation ranges cut at the 5th percentile: int8 ruins every layer, and layers go back to float
    applied = quantize.apply(model, cfg(mode="mixed", max_score_drop=0.0, calibration="percentile", percentile=5.0),
                             task)
    q, f = applied.model, applied.facts
    floats = [n for n, why in f["fallback_layers"].items() if "kept in float" in why]
    assert "features.0" in floats, f["fallback_layers"]
    for name in floats:
        torch.testing.assert_close(q.get_submodule(name).bias, model.get_submodule(name).bias, rtol=0, atol=1e-6)
        assert name not in f.get("bias_correction", {})
    assert set(f.get("bias_correction", {})) <= {n for n, b in f["layer_bits"].items() if b == 8}


def test_bias_correction_is_confirmed_on_validation_inputs():
    """The shift is estimated on calibration inputs; a channel is corrected only where the shift also
    shrinks the mean error on validation inputs (decisions on validation, issue #21)."""
    from modelpress.compress._quant.bias import correct_bias
    from modelpress.compress._quant.layers import calibrate, select, weight_specs, wrap

    def shifts_with(check_sign: float | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 8)).eval()
        x = (torch.rand(256, 16) + 0.5).numpy()  # positive inputs: rounding's error has a clear mean
        layers = select(model, (), (), True)
        wrapped = wrap(model, layers, weight_specs(layers, cfg(per_channel=False)), "static")
        calib = [{"x": x}]
        calibrate(model, wrapped, [{"x": np.concatenate([x, -x])}], ("x",), "minmax", 99.99)  # ranges cover both
        check = None if check_sign is None else [{"x": check_sign * x[::-1].copy()}]
        return correct_bias(model, wrapped, calib, ("x",), check=check)["0"]

    alone, agreeing, contradicting = shifts_with(None), shifts_with(1.0), shifts_with(-1.0)
    assert int((alone != 0).sum()) >= 4  # the calibration estimate alone corrects most channels
    assert torch.equal(agreeing, alone)  # validation with the same error: the same shifts
    assert int((contradicting != 0).sum()) == 0  # validation's error has the other sign: nothing is shifted
