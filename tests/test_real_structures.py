"""Techniques on the structures real pretrained CNNs have (issue #17), reproduced small by
``zoo.TinyEfficientNet``: an ``nn.Conv2d`` subclass that pads in its own forward (asymmetric "SAME"),
depthwise convolutions, squeeze-excite gates, residual adds and namedtuple attributes."""

import numpy as np
import pytest
import torch

from modelpress.compress import quantize
from modelpress.config import parse
from modelpress.export import onnx as onnx_export
from modelpress.runtime import open_session
from modelpress.zoo import SamePadConv2d, TinyEfficientNet

from .test_contracts import small_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (3, 16, 16)


def calibrated_model() -> torch.nn.Module:
    """TinyEfficientNet with its BatchNorm statistics taken from data, so activations (and outputs) carry
    signal as in a trained model rather than shrinking layer by layer."""
    torch.manual_seed(0)
    model = TinyEfficientNet()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the pass
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((64, *SHAPE)).astype(np.float32))
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def relative_error(y: np.ndarray, ref: np.ndarray) -> float:
    """Squared error over the reference's variance across samples (what the outputs say about the input)."""
    return float(((y - ref) ** 2).sum() / ((ref - ref.mean(0)) ** 2).sum())


def outputs(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_the_test_model_has_the_structures_of_the_real_one():
    model = calibrated_model()
    stem, dw = model._conv_stem, model._blocks[1]._depthwise_conv
    assert isinstance(stem, SamePadConv2d) and stem.padding == (0, 0)
    assert isinstance(stem.static_padding, torch.nn.ZeroPad2d) and stem.static_padding.padding == (0, 1, 0, 1)
    assert dw.groups == dw.in_channels > 1 and isinstance(dw.static_padding, torch.nn.ZeroPad2d)
    assert type(model._global_params).__name__ == "GlobalParams" and model._blocks[0]._block_args._fields
    y = outputs(model, np.zeros((2, *SHAPE), np.float32) + 1)
    assert y.shape == (2, 10) and np.isfinite(y).all()


@pytest.mark.parametrize("mode", ["static", "mixed", "qat"])
def test_int8_quantization_computes_padded_layers_as_they_pad(mode, tmp_path):
    """Calibration, bias correction, BatchNorm folding, QAT and the accuracy-aware fallback run every layer
    through its own forward (the padded subclass used to be called without its padding: a shape error in
    bias correction). The int8 graph ONNX Runtime runs stays close to the float model."""
    model, task = calibrated_model(), small_task(SHAPE)
    applied = quantize.apply(model, parse(quantize.Config, {"mode": mode}, "quantize"), task)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(applied.facts["folded_batchnorm"]) == 10  # every BatchNorm follows a padded convolution
    if mode != "qat":  # after folding every convolution has a bias, and each one was corrected
        assert set(applied.facts["bias_correction"]) == {*convs, "_fc"}
    art = onnx_export.export(applied.model, task, tmp_path, rewrites=applied.onnx_rewrites)
    assert set(art.manifest["facts"]["int8_layers"]) == {*convs, "_fc"}
    x = task.example_inputs(32)["x"]
    int8 = open_session(art).run({"x": x})[0]
    assert relative_error(int8, outputs(model, x)) < 0.05


class SizeChecked(torch.nn.Module):
    """Runs only while its shape attribute is a torch.Size (which a skeleton stores as a plain tuple)."""

    def __init__(self):
        super().__init__()
        self.shape = torch.Size([10])

    def forward(self, x):
        if type(self.shape) is not torch.Size:
            raise TypeError("shape is not a torch.Size")
        return x


def test_search_cache_keeps_namedtuple_attributes(tmp_path):
    """The search's prefix cache stores a model as a skeleton and checks it by running the rebuilt copy. A
    namedtuple attribute came back as a plain tuple, so that check crashed with "'tuple' object has no
    attribute 'drop_connect_rate'" (a search over prune on EfficientNet-Lite2). It now keeps its class, and a
    copy that does not run is kept in memory only, never a crash."""
    from modelpress.compress import Applied
    from modelpress.search.cache import PrefixCache

    model = calibrated_model()
    example = small_task(SHAPE).example_inputs(2)
    assert PrefixCache(tmp_path).put("k", Applied.of(model), example)
    back = PrefixCache(tmp_path).get("k").model
    assert type(back._global_params) is type(model._global_params)
    assert back._blocks[2]._block_args == model._blocks[2]._block_args
    assert np.array_equal(outputs(back, example["x"]), outputs(model, example["x"]))

    odd = torch.nn.Sequential(model, SizeChecked())
    cache = PrefixCache(tmp_path, allowed=("tests.",))
    assert not cache.put("odd", Applied.of(odd), example) and not (tmp_path / "odd").exists()
    assert cache.get("odd") is not None  # still reused within the process


def test_relu6_shares_the_next_layers_quantization_point_and_zero_padding_merges_into_the_convolution(tmp_path):
    """Between two int8 convolutions of an EfficientNet-Lite / MobileNetV2 block sit ReLU6 (an ONNX Clip from 0
    to 6) and, in the "SAME" layers, a zero Pad. The Pad merges into the convolution's own padding; quantizing
    commutes with ReLU6, so the next layer's input point is repeated on the convolution's output and ONNX
    Runtime folds the Clip away. The convolution's output never gets a point of its own over its pre-ReLU6
    range (a second, coarser rounding: MobileNetV2's static int8 had cosine 0.934 to fp32 on the test views
    with it, 0.979 without; BENCHMARKS.md)."""
    import onnx

    from modelpress.runtime.onnxruntime_ops import optimized_graph

    model, task = calibrated_model(), small_task(SHAPE)
    applied = quantize.apply(model, parse(quantize.Config, {"mode": "static"}, "quantize"), task)
    art = onnx_export.export(applied.model, task, tmp_path, rewrites=applied.onnx_rewrites)
    g = onnx.load(str(art.path)).graph
    assert not any(n.op_type == "Pad" for n in g.node)  # every Pad merged into its convolution (qdq.fold_pads)
    padded = sum(isinstance(m, torch.nn.ZeroPad2d) and any(m.padding) for m in model.modules())
    assert sum(any(a.name == "pads" and any(a.ints) for a in n.attribute) for n in g.node if n.op_type == "Conv") \
        == padded >= 4
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    scale = {n.input[0]: float(inits[n.input[1]]) for n in g.node if n.op_type == "QuantizeLinear"}
    passed = 0
    for node in g.node:
        if node.op_type != "Clip" or node.output[0] not in scale:
            continue
        x, seen = node.input[0], []
        while x in producer and producer[x].op_type in ("Clip", "DequantizeLinear", "QuantizeLinear"):
            if x in scale:
                seen.append(scale[x])
            x = producer[x].input[0]  # up to the convolution
        assert producer[x].op_type == "Conv" and scale.get(x) == scale[node.output[0]], node.name
        assert set(seen) <= {scale[x]}, node.name  # one point all the way: no second rounding
        passed += 1
    assert passed >= 4  # every ReLU6 between two convolutions of the model
    ran = [n.op_type for n in optimized_graph(onnx.load(str(art.path))).graph.node]
    float_clips = [n for n in g.node if n.op_type == "Clip" and n.output[0] not in scale]  # into SE gates, pooling
    assert ran.count("Clip") == len(float_clips) < sum(n.op_type == "Clip" for n in g.node)
    assert not set(ran) & {"Conv", "FusedConv", "Pad"}  # ReLU6 and padding folded into the int8 convolutions
    x = task.example_inputs(32)["x"]
    assert relative_error(open_session(art).run({"x": x})[0], outputs(model, x)) < 0.05
