"""The ``packed`` storage codec: low-bit weights really shrink the artifact and decode to a runnable model."""
import json

import numpy as np
import pytest
import torch

from modelpress import artifact
from modelpress.compress import quantize
from modelpress.config import parse
from modelpress.errors import ModelFileError
from modelpress.pipeline import export_model
from modelpress.recipe import parse_recipe
from modelpress.runtime import open_session
from modelpress.storage import packed
from modelpress.zoo import LeNet300100

from .test_contracts import small_task


def export(model, task, steps, folder):
    return export_model(model, task, parse_recipe({"task": "digits", "steps": steps}), folder)


@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    return LeNet300100().eval(), small_task((1, 28, 28))


def test_int4_weights_take_an_eighth_and_decode_exactly(mlp, tmp_path):
    model, task = mlp
    fp32 = export(model, task, [], tmp_path / "fp32")
    steps = [{"quantize": {"mode": "weight_only", "bits": 4, "group_size": 64, "exclude": ["net.5"]}}]
    q = quantize.apply(model, parse(quantize.Config, steps[0]["quantize"], "quantize"), task)
    art = export(q, task, steps, tmp_path / "int4")
    assert art.manifest["encoding"] == "packed" and list(art.manifest["files"]) == ["model.packed"]
    assert not (tmp_path / "int4" / "model.onnx").exists()
    # 4 bits per weight + one float32 scale per 64 weights = 4.5/32 of the weights' bytes, plus biases and graph
    assert art.size_bytes <= 0.16 * fp32.size_bytes
    index = json.loads(__import__("safetensors.numpy", fromlist=["load"]).load(
        art.path.read_bytes())["__index__"].tobytes())
    assert sorted(m["bits"] for m in index.values()) == [4, 4]  # net.1 and net.3; excluded net.5 stays float
    x = task.example_inputs(8)
    out = open_session(artifact.load(tmp_path / "int4")).run(x)[0]
    ref = q.model(torch.from_numpy(x["x"])).detach().numpy()
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    assert q.facts["layer_bits"] == {"net.1": 4, "net.3": 4}


def test_mixed_bit_widths_are_found_per_tensor(mlp, tmp_path):
    model, task = mlp
    steps = [{"quantize": {"mode": "weight_only", "bits": 3, "max_score_drop": 0.0, "eval_samples": 64}}]
    q = quantize.apply(model, parse(quantize.Config, steps[0]["quantize"], "quantize"), task)
    bits = q.facts["layer_bits"]
    art = export(q, task, steps, tmp_path / "mixed")
    stored = sorted(b for b in bits.values() if b <= 8)
    assert art.manifest["packed"]["bits"] == sorted(set(stored))
    x = task.example_inputs(4)
    ref = q.model(torch.from_numpy(x["x"])).detach().numpy()
    assert np.allclose(open_session(art).run(x)[0], ref, atol=1e-5)


def test_damaged_packed_file_is_refused(mlp, tmp_path):
    model, task = mlp
    steps = [{"quantize": {"mode": "weight_only", "bits": 8}}]
    q = quantize.apply(model, parse(quantize.Config, steps[0]["quantize"], "quantize"), task)
    art = export(q, task, steps, tmp_path / "int8")
    data = art.path.read_bytes()
    for damaged in (data[: len(data) // 2], b"\xff" * 16 + data[16:]):  # truncated; header overwritten
        art.path.write_bytes(damaged)
        with pytest.raises(ModelFileError, match="does not match the hash"):
            artifact.load(tmp_path / "int8")  # the manifest's hash catches any change
        with pytest.raises(ModelFileError, match="not a valid packed artifact"):
            open_session(artifact.load(tmp_path / "int8", verify=False))


def test_weights_off_the_grid_stay_float():
    w = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    assert packed._on_grid(w, 0, {"granularity": "channel"}) is None
    q = quantize.apply(LeNet300100().eval(), parse(quantize.Config, {"mode": "weight_only", "bits": 5}, "q"),
                       small_task((1, 28, 28))).model
    w5 = q.net[1].weight.detach().numpy()
    meta, codes, scale, zp = packed._on_grid(w5.T.copy(), 1, {"granularity": "channel"})  # MatMul layout
    assert meta["bits"] == 5 and codes.max() < 32
    assert np.allclose(packed.dequantize(codes, scale, zp.astype(np.float32), meta), w5.T, rtol=0, atol=1e-7)
