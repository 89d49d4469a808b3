"""Structured pruning: the dependency graph keeps coupled layers consistent, the model shrinks by about
the requested share, runs, exports to ONNX, and can be rebuilt from its record."""
import copy
import re

import numpy as np
import pytest
import torch
from torch import nn

from modelpress.compress import prune
from modelpress.compress._prune import counts
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.export import onnx as onnx_export
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.storage import sparse
from modelpress.zoo import DepthwiseCNN, LeNet5, TinyResNet, TinyTransformer

MODELS = {
    "resnet": (TinyResNet, (1, 16, 16)),
    "depthwise": (DepthwiseCNN, (1, 16, 16)),
    "transformer": (TinyTransformer, (8, 8)),
}


def build(name):
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    return cls().eval(), prune.example_task(shape)


def run(model, task, n=4):
    with torch.no_grad():
        return model(torch.from_numpy(task.example_inputs(n)["x"]))


def onnx_outputs(applied, task, folder):
    """Export the pruned model and store it the way the step asked (the sparse codec); run it."""
    art = onnx_export.export(applied.model, task, folder)
    assert applied.storage is not None and applied.storage.encoding == "sparse"
    art = sparse.encode(art, applied.model, dict(applied.storage.options))
    return open_session(art, RuntimeConfig(threads=1)).run(task.example_inputs(4))[0], art


@pytest.mark.parametrize("target", ["params", "macs"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_structured_pruning_shrinks_runs_and_exports(name, target, tmp_path):
    model, task = build(name)
    applied = prune.apply(model, prune.Config(round_to=1, ratio=0.5, target=target), task)
    pruned, f = applied.model, applied.facts
    example = prune.example_inputs(task)
    assert f["params_before"] == counts.params(model) and f["params_after"] == counts.params(pruned)
    assert f["macs_before"] == counts.macs(model, example) and f["macs_after"] == counts.macs(pruned, example)
    params_drop = 1 - f["params_after"] / f["params_before"]
    macs_drop = 1 - f["macs_after"] / f["macs_before"]
    asked = params_drop if target == "params" else macs_drop
    assert abs(asked - 0.5) <= 0.08, (params_drop, macs_drop)
    assert params_drop > 0.3 and macs_drop > 0.3  # both really drop, whichever was the target
    out = run(pruned, task)
    assert out.shape == run(model, task).shape and torch.isfinite(out).all()
    ort_out, _ = onnx_outputs(applied, task, tmp_path)
    np.testing.assert_allclose(ort_out, out.numpy(), atol=1e-4)


def test_channel_ratio_halves_every_group_and_keeps_shapes_consistent():
    model, task = build("resnet")
    pruned = prune.apply(model, prune.Config(round_to=1, ratio=0.5), task).model
    assert pruned.stem[0].out_channels == 8 and pruned.layer2.conv1.out_channels == 16
    assert pruned.fc.out_features == 10  # the output layer is never pruned
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)
        if isinstance(m, nn.BatchNorm2d):
            assert m.weight.shape == m.running_mean.shape == (m.num_features,)
    # residual: the add couples stem, layer1.conv2 and the inputs of layer2's conv and shortcut
    assert pruned.layer1.conv2.out_channels == pruned.stem[0].out_channels == pruned.layer2.shortcut[0].in_channels


def test_depthwise_convolutions_stay_depthwise():
    model, task = build("depthwise")
    pruned = prune.apply(model, prune.Config(round_to=1, ratio=0.5), task).model
    for block in pruned.blocks:
        dw = block[0]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.weight.shape[1] == 1
    assert pruned.blocks[0][0].out_channels == pruned.stem[0].out_channels == 8


def test_attention_heads_are_removed_whole():
    model, task = build("transformer")
    pruned = prune.apply(model, prune.Config(ratio=0.5), task).model
    for block in pruned.blocks:
        attn = block.attn
        assert attn.num_heads == 2 and attn.head_dim == 16
        assert attn.q.out_features == attn.k.out_features == attn.v.out_features == attn.o.in_features == 32
        assert block.ffn[0].out_features == 128 == block.ffn[2].in_features
    assert pruned.pos.shape[-1] == pruned.embed.out_features == pruned.head.in_features == 32


def test_least_important_channels_go_first():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    with torch.no_grad():
        model.features[0].weight[::2] *= 1e-3  # even filters are tiny
    (record,) = prune.apply(model, prune.Config(round_to=1, ratio=0.5), task).storage.options["pruning"]
    kept = next(c["kept"] for c in record["cuts"] if c["layer"] == "features.0" and c["axis"] == "out")
    assert kept == list(range(1, 20, 2))
    # flatten -> linear: each kept conv channel keeps its 16 spatial columns of classifier.1
    conv2 = next(c["kept"] for c in record["cuts"] if c["layer"] == "features.3")
    lin = next(c["kept"] for c in record["cuts"] if c["layer"] == "classifier.1" and c["axis"] == "in")
    assert lin == [c * 16 + j for c in conv2 for j in range(16)]


def test_bn_scale_importance_uses_batchnorm_gamma():
    model, task = build("resnet")
    with torch.no_grad():
        model.layer1.bn1.weight.copy_(torch.arange(16, dtype=torch.float32) + 1)
    pruned = prune.apply(model, prune.Config(round_to=1, ratio=0.5, importance="bn_scale"), task)
    cuts = pruned.storage.options["pruning"][0]["cuts"]
    assert next(c["kept"] for c in cuts if c["layer"] == "layer1.bn1") == list(range(8, 16))


def test_taylor_importance_runs_and_needs_training_data():
    import dataclasses

    model, task = build("resnet")
    pruned = prune.apply(model, prune.Config(round_to=1, ratio=0.5, importance="taylor"), task).model
    assert pruned.stem[0].out_channels == 8
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match="taylor.*train_data"):
        prune.apply(model, prune.Config(round_to=1, importance="taylor"), dataclasses.replace(task, train_data=None))


def test_round_to_keeps_multiples():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    pruned = prune.apply(model, prune.Config(ratio=0.5, round_to=8), task).model
    assert [pruned.features[0].out_channels, pruned.features[3].out_channels, pruned.classifier[1].out_features] == [8, 24, 248]


def test_global_scope_removes_the_share_of_all_units_with_a_cap():
    model, task = build("resnet")
    with torch.no_grad():  # 30 of layer2.conv1's 32 channels are weak everywhere they are coupled
        for t in (model.layer2.conv1.weight, model.layer2.bn1.weight, model.layer2.bn1.bias):
            t[2:] *= 1e-4
        model.layer2.conv2.weight[:, 2:] *= 1e-4
    pruned = prune.apply(model, prune.Config(round_to=1, ratio=0.3, scope="global"), task).model
    assert pruned.layer2.conv1.out_channels == 4  # the global ranking takes them, up to the 90% cap
    sizes = [pruned.stem[0].out_channels, pruned.layer1.conv1.out_channels, pruned.layer2.conv1.out_channels,
             pruned.layer2.conv2.out_channels]
    assert 96 - sum(sizes) == round(96 * 0.3)
    uniform = prune.apply(model, prune.Config(round_to=1, ratio=0.3), task).model
    assert uniform.layer2.conv1.out_channels == 22


def test_concat_is_handled_with_offsets(tmp_path):
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1)
            self.merge = nn.Conv2d(16, 8, 1)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

        def forward(self, x):
            return self.head(self.merge(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)))

    torch.manual_seed(0)
    model, task = Branches().eval(), prune.example_task((1, 8, 8))
    applied = prune.apply(model, prune.Config(round_to=1, ratio=0.5), task)
    cuts = {(c["layer"], c["axis"]): c["kept"] for c in applied.storage.options["pruning"][0]["cuts"]}
    assert cuts[("merge", "in")] == cuts[("a", "out")] + [8 + i for i in cuts[("b", "out")]]
    assert applied.model.merge.in_channels == 8
    ort_out, _ = onnx_outputs(applied, task, tmp_path)
    np.testing.assert_allclose(ort_out, run(applied.model, task).numpy(), atol=1e-4)


def test_rebuild_from_the_artifact_record(tmp_path):
    model, task = build("transformer")
    applied = prune.apply(model, prune.Config(ratio=0.5, steps=2, epochs=1), task)
    pruned = applied.model
    _, art = onnx_outputs(applied, task, tmp_path)
    record = prune.read_record(art.folder)
    assert record and record[0]["version"] == 1 and all("kept" in c or "set" in c for c in record[0]["cuts"])
    rebuilt = prune.rebuild(model, record)
    rebuilt.load_state_dict(pruned.state_dict())  # the architecture matches exactly
    torch.testing.assert_close(run(rebuilt, task), run(pruned, task))
    assert rebuilt.blocks[0].attn.num_heads == pruned.blocks[0].attn.num_heads


def test_rebuild_without_fine_tuning_reproduces_the_pruned_weights():
    model, task = build("depthwise")
    applied = prune.apply(model, prune.Config(ratio=0.5, refit=False), task)  # the re-fit changes kept weights
    rebuilt = prune.rebuild(model, applied.storage.options["pruning"])
    torch.testing.assert_close(run(rebuilt, task), run(applied.model, task))
    with pytest.raises(Exception, match="different model"):
        prune.rebuild(applied.model, applied.storage.options["pruning"])


def test_input_model_is_not_modified():
    model, task = build("resnet")
    before = copy.deepcopy(model.state_dict())
    first = prune.apply(model, prune.Config(ratio=0.5, epochs=1), task)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # nor is an earlier step's Applied: its model, facts and storage request stay as they were
    first_state, first_facts = copy.deepcopy(first.model.state_dict()), copy.deepcopy(first.facts)
    second = prune.apply(first, prune.Config(ratio=0.5), task)
    assert all(torch.equal(first_state[k], v) for k, v in first.model.state_dict().items())
    assert first.facts == first_facts and len(first.storage.options["pruning"]) == 1
    assert len(second.storage.options["pruning"]) == 2  # the later step keeps both records


def test_exclude_leaves_layers_and_their_coupled_channels_alone():
    model, task = build("resnet")
    pruned = prune.apply(model, prune.Config(ratio=0.5, exclude=("layer1",)), task).model
    assert pruned.layer1.conv1.out_channels == 16 and pruned.stem[0].out_channels == 16  # coupled by the add
    assert pruned.layer2.conv1.out_channels == 16  # others still pruned
    only = prune.apply(model, prune.Config(ratio=0.5, include=("layer2.conv1",)), task).model
    assert only.layer2.conv1.out_channels == 16 and only.stem[0].out_channels == 16


@pytest.mark.parametrize("settings, needle", [
    ({"ratio": 1.0}, "ratio must be in"),
    ({"ratio": -0.1}, "ratio must be in"),
    ({"round_to": 0}, "round_to"),
    ({"n": 4, "m": 4}, "n < m"),
    ({"method": "magnitude", "target": "params"}, "method 'channel' only"),
    ({"importance": "l3"}, "Did you mean 'l2'"),
])
def test_bad_settings_fail_clearly(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        parse(prune.Config, settings, "prune")


def test_ratio_that_empties_a_layer_names_it():
    model, task = build("transformer")
    with pytest.raises(ConfigError, match=r"every head of 'blocks\.\d\.attn'.*exclude"):
        prune.apply(model, prune.Config(ratio=0.9), task)


def test_layer_the_graph_cannot_cut_is_left_whole_and_named():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).eval()
    task = prune.example_task((1, 8, 8))
    applied = prune.apply(model, prune.Config(ratio=0.5), task)
    pruned = applied.model
    assert pruned[2].out_channels == 8 and pruned[0].out_channels == 8  # coupled to the grouped conv: whole
    assert re.search(r"left whole.*'2' \(Conv2d\).*groups=2.*exclude: \['2'\]", applied.facts["prune_skipped"]["0"])
    assert run(pruned, task).shape == (4, 10)
    excluded = prune.apply(model, prune.Config(ratio=0.5, exclude=("2",)), task)
    assert excluded.model[0].out_channels == 8 and "prune_skipped" not in excluded.facts


def test_include_matching_nothing_lists_the_layers():
    model, task = build("resnet")
    with pytest.raises(ConfigError, match="matches no prunable layer.*layer1.conv1"):
        prune.apply(model, prune.Config(include=("nope*",)), task)


def test_a_cut_the_graph_got_wrong_is_left_whole_and_named():
    class AddsInput(nn.Module):  # the input joins a residual add, which the traced graph cannot see
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

        def forward(self, x):
            return self.head(self.conv(x) + x)

    model, task = AddsInput().eval(), prune.example_task((4, 8, 8))
    applied = prune.apply(model, prune.Config(round_to=1, ratio=0.5), task)
    assert applied.model.conv.out_channels == 4 and run(applied.model, task).shape == (4, 10)
    assert re.search(r"left whole.*'conv'.*breaks the model.*exclude", applied.facts["prune_skipped"]["conv"])
    assert run(prune.apply(model, prune.Config(round_to=1, ratio=0.5, exclude=("conv",)), task).model, task).shape == (4, 10)
