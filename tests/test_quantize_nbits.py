"""``quantize: {mode: weight_only, compute: packed}``: MatMul/Gemm layers run on ONNX Runtime's MatMulNBits
from their packed codes, and compute what the quantized torch model computes."""
import numpy as np
import onnx
import pytest
import torch

from modelpress.compress import quantize
from modelpress.compress._quant.nbits import blocks_on_grid, pack_rows
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.pipeline import export_model
from modelpress.recipe import parse_recipe
from modelpress.runtime import open_session

from .test_contracts import small_task


class Tokens(torch.nn.Module):
    """[B, T, 40] -> logits: a 3-D MatMul (K = 40, not a multiple of 32), a 1x1 convolution, a 2-D Gemm head."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(40, 64)
        self.mix = torch.nn.Conv1d(64, 64, 1)
        self.small = torch.nn.Linear(64, 8)  # K = 64 > N: several blocks per row
        self.head = torch.nn.Linear(8, 10)  # K = 8 < group_size: one padded block

    def forward(self, x):
        h = torch.nn.functional.gelu(self.embed(x))
        h = self.mix(h.transpose(1, 2)).transpose(1, 2)
        return self.head(torch.relu(self.small(h.mean(1))))


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(0)
    return Tokens().eval(), small_task((5, 40))


def _run(model, task, cfgs, folder, fmt="onnx", backend="onnxruntime"):
    """Apply the quantize steps ``cfgs`` in order, export, and run: (Applied, artifact, output, torch output)."""
    q = model
    for cfg in cfgs:
        q = quantize.apply(q, parse(quantize.Config, cfg, "quantize"), task)
    recipe = parse_recipe({"task": "digits", "steps": [{"quantize": c} for c in cfgs], "export": {"format": fmt},
                           "runtime": {"backend": backend}})
    art = export_model(q, task, recipe, folder)
    x = task.example_inputs(8)
    out = open_session(art, recipe.runtime).run(x)[0]
    return q, art, out, q.model(torch.from_numpy(x["x"])).detach().numpy()


@pytest.mark.parametrize("symmetric", [True, False])
def test_linear_layers_run_on_matmulnbits_and_match_torch(tokens, tmp_path, symmetric):
    model, task = tokens
    cfg = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed", "symmetric": symmetric}
    q, art, out, ref = _run(model, task, [cfg], tmp_path / "q")
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    proto = onnx.load(str(art.runnable_path()))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") == 3 and "Gemm" not in ops
    weights = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2}
    assert not any(n.op_type == "MatMul" and n.input[1] in weights for n in proto.graph.node)  # none left float


def test_packed_int8_multiplies_int8_inputs_close_to_torch(tokens, tmp_path):
    model, task = tokens
    cfg = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed_int8"}
    _, art, out, ref = _run(model, task, [cfg], tmp_path / "q")
    levels = [a.i for n in onnx.load(str(art.runnable_path())).graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"]
    assert levels == [4, 4, 4]
    assert np.abs(out - ref).max() <= 5e-2 * np.abs(ref).max()  # the inputs' int8 rounding: close, not exact


def test_rewrite_facts_name_the_layers_and_what_stayed_float(tokens, tmp_path):
    from modelpress.export.onnx import lower, to_onnx

    model, task = tokens
    cfg = parse(quantize.Config, {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed"}, "q")
    q = quantize.apply(model, cfg, task)
    _, facts = lower(to_onnx(q.model, task), q.onnx_rewrites, task)
    assert facts["nbits_layers"] == {"embed": "MatMulNBits int4", "small": "MatMulNBits int4",
                                     "head": "MatMulNBits int4"}
    assert "convolution" in facts["nbits_kept"]["mix"]


def test_layers_left_at_8_bits_run_as_8_bit_blocks(tokens, tmp_path):
    model, task = tokens
    head = {"mode": "weight_only", "bits": 8, "group_size": 32, "include": ["head"]}  # as a sensitive layer kept
    rest = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed", "exclude": ["head"]}
    q, art, out, ref = _run(model, task, [head, rest], tmp_path / "q")
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    proto = onnx.load(str(art.runnable_path()))
    widths = {n.name.split("/")[1]: next(a.i for a in n.attribute if a.name == "bits")
              for n in proto.graph.node if n.op_type == "MatMulNBits"}
    assert widths == {"embed": 4, "small": 4, "head": 8}


def test_openvino_converts_the_packed_layers(tokens, tmp_path):
    pytest.importorskip("openvino")
    model, task = tokens
    cfg = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed"}
    _, _, out, ref = _run(model, task, [cfg], tmp_path / "ov", fmt="openvino", backend="openvino")
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max()


def test_blocks_and_packing_follow_matmulnbits_layout():
    w = np.array([[0.7, -0.3, 0.1] * 12], np.float32)  # K = 36: two blocks of 32, the second padded
    spec_scale = 0.7 / 7
    w = np.round(w / spec_scale) * spec_scale
    codes, scales, zps = blocks_on_grid(w.astype(np.float32), 4, 32, True)
    assert codes.shape == (1, 2, 32) and scales.shape == (1, 2) and zps is None
    assert codes[0, 0, :3].tolist() == [15, 5, 9] and codes[0, 1, 4:].tolist() == [8] * 28  # padding decodes to 0
    assert pack_rows(np.array([[1, 2, 3, 0, 1, 2, 3, 0]], np.uint8), 2).tolist() == [[57, 57]]
    assert blocks_on_grid(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32), 4, 32, True) is None


@pytest.mark.parametrize("cfg, message", [
    ({"mode": "static", "compute": "packed"}, "weight_only"),
    ({"mode": "weight_only", "bits": 4, "group_size": 48, "compute": "packed"}, "power of two"),
    ({"mode": "weight_only", "bits": 4, "compute": "packed"}, "power of two"),
    ({"mode": "weight_only", "bits": 3, "group_size": 32, "compute": "packed"}, "2, 4, 8-bit"),
])
def test_settings_matmulnbits_cannot_run_are_refused(cfg, message):
    with pytest.raises(ConfigError, match=message):
        parse(quantize.Config, cfg, "quantize")
