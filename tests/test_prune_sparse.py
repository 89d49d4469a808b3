"""Unstructured magnitude and N:M pruning, the mask train hook, and the ``sparse`` storage codec."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from modelpress.artifact import load
from modelpress.compress import Storage, prune
from modelpress.train import TrainConfig, fit
from modelpress.errors import ConfigError, ModelFileError
from modelpress.export import onnx as onnx_export
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.storage import sparse
from modelpress.zoo import LeNet5, LeNet300100, TinyTransformer


def lenet300(seed=0):
    torch.manual_seed(seed)
    return LeNet300100().eval(), prune.example_task((1, 28, 28))


def weights(model):
    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def test_per_layer_magnitude_zeroes_the_smallest_share_of_each_layer():
    model, task = lenet300()
    applied = prune.apply(model, prune.Config(method="magnitude", ratio=0.7), task)
    before, after = weights(model), weights(applied.model)
    for name, w in after.items():
        zero = w == 0
        assert abs(zero.float().mean().item() - 0.7) <= 1 / w.numel() + 1e-6, name
        assert before[name][zero].abs().max() <= before[name][~zero].abs().min()  # threshold, not random
        assert torch.equal(w[~zero], before[name][~zero])  # survivors untouched
    f = applied.facts
    assert abs(f["sparsity"] - 0.7) < 1e-3 and f["macs_after"] == f["macs_before"]
    assert f["params_after"] < 0.32 * f["params_before"]
    assert "no speedup" in f["prune_note"]


def test_global_magnitude_uses_one_threshold():
    model, task = lenet300()
    with torch.no_grad():
        model.net[3].weight.mul_(0.001)  # a layer of tiny weights: one global threshold takes all of it
    pruned = prune.apply(model, prune.Config(method="magnitude", ratio=0.5, scope="global"), task).model
    before, after = weights(model), weights(pruned)
    zeroed = torch.cat([before[n][after[n] == 0].abs() for n in before])
    kept = torch.cat([before[n][after[n] != 0].abs() for n in before])
    assert zeroed.max() <= kept.min()
    assert (after["net.3"] == 0).all() and (after["net.1"] == 0).float().mean() < 0.5


def test_iterative_schedule_reaches_the_ratio_and_zeros_stay_zero_while_training():
    model, task = lenet300()
    applied = prune.apply(model, prune.Config(method="magnitude", ratio=0.8, steps=2, epochs=1, lr=1e-2), task)
    after = weights(applied.model)
    assert all(abs((w == 0).float().mean().item() - 0.8) < 0.01 for w in after.values())
    masks = {n: w == 0 for n, w in after.items()}
    # a later step trains (e.g. distillation) with the train hooks of the steps before
    fit(applied.model, task.train_data, TrainConfig(epochs=2, lr=1e-2), hooks=applied.train_hooks)
    again = weights(applied.model)
    for n, zero in masks.items():
        assert torch.all(again[n][zero] == 0), n
        assert not torch.equal(again[n][~zero], after[n][~zero])  # the other weights did train


def test_n_m_keeps_n_of_every_m_along_input_channels():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    applied = prune.apply(model, prune.Config(method="nm", n=2, m=4), task)
    pruned = applied.model
    conv = pruned.features[3].weight.detach().permute(0, 2, 3, 1).reshape(-1, 4)  # runs of 4 input channels
    assert torch.all((conv != 0).sum(1) == 2)
    lin = pruned.classifier[1].weight.detach().reshape(-1, 4)
    assert torch.all((lin != 0).sum(1) == 2)
    f = applied.facts
    assert f["nm_skipped_layers"] == ["features.0"]  # one input channel: no run of 4
    assert torch.equal(pruned.features[0].weight, model.features[0].weight)
    assert "sparse tensor cores" in f["prune_note"]


def test_sparse_artifact_really_shrinks_and_decodes_losslessly(tmp_path):
    model, task = lenet300()
    applied = prune.apply(model, prune.Config(method="magnitude", ratio=0.9), task)
    assert applied.storage == Storage("sparse", {})
    pruned = applied.model
    dense = onnx_export.export(pruned, task, tmp_path / "dense")
    dense_proto = onnx.load(str(dense.path))
    art = onnx_export.export(pruned, task, tmp_path / "sparse")
    art = sparse.encode(art, pruned, {})
    assert art.manifest["encoding"] == "sparse" and sorted(art.manifest["files"]) == [sparse.FILE]
    assert not (tmp_path / "sparse" / "model.onnx").exists()
    fp32 = onnx_export.export(model, task, tmp_path / "fp32")
    assert art.size_bytes <= 0.2 * fp32.size_bytes
    decoded = onnx.load(str(load(art.folder).runnable_path()))
    for a, b in zip(dense_proto.graph.initializer, decoded.graph.initializer):
        assert a.name == b.name and np.array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))
    out = open_session(load(art.folder), RuntimeConfig(threads=1)).run(task.example_inputs(8))[0]
    with torch.no_grad():
        ref = pruned(torch.from_numpy(task.example_inputs(8)["x"])).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_structured_only_artifact_keeps_its_plain_file_and_gains_the_record(tmp_path):
    torch.manual_seed(0)
    model, task = TinyTransformer().eval(), prune.example_task((8, 8))
    with torch.no_grad():
        model.pos.normal_()  # no zero-heavy tensor left to encode
    applied = prune.apply(model, prune.Config(ratio=0.5), task)
    assert applied.storage.encoding == "sparse"
    art = sparse.encode(onnx_export.export(applied.model, task, tmp_path), applied.model, dict(applied.storage.options))
    assert "encoding" not in art.manifest and art.runnable_path() == art.path
    assert load(tmp_path).manifest["pruning"][0]["method"] == "channel"


def test_damaged_sparse_file_is_a_clear_error(tmp_path):
    model, task = lenet300()
    pruned = prune.apply(model, prune.Config(method="magnitude", ratio=0.9), task).model
    art = sparse.encode(onnx_export.export(pruned, task, tmp_path), pruned, {})
    art.path.write_bytes(art.path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="hash"):
        load(tmp_path)
    with pytest.raises(ModelFileError, match="not a valid sparse artifact|re-export"):
        sparse.decode(load(tmp_path, verify=False))


def test_unstructured_include_and_exclude():
    model, task = lenet300()
    pruned = prune.apply(model, prune.Config(method="magnitude", ratio=0.5, exclude=("net.5",)), task).model
    assert torch.equal(pruned.net[5].weight, model.net[5].weight)
    assert (pruned.net[1].weight == 0).any()
    with pytest.raises(ConfigError, match="matches no prunable layer.*net.1"):
        prune.apply(model, prune.Config(method="magnitude", include=("classifier*",)), task)
