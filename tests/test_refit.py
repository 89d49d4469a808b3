"""Label-free re-fit after channel pruning (``compress/_refit.py``): the layers that lost inputs are
fitted back to the unpruned model's outputs, also through convolutions that pad themselves; what it cannot
reproduce it leaves alone and says so; a re-fit that lowers the validation score is undone."""
import copy

import pytest
import torch
from torch import nn

from modelpress.compress import distill, lowrank, prune
from modelpress.compress import _refit as refit
from modelpress.zoo import DepthwiseCNN, TinyResNet, TinyTransformer

MODELS = {"resnet": (TinyResNet, (1, 16, 16)), "depthwise": (DepthwiseCNN, (1, 16, 16)),
          "transformer": (TinyTransformer, (8, 8))}


def calibration(task):
    return [(torch.from_numpy(b["x"] if isinstance(b, dict) else b[0]["x"]),) for b in task.calib_data]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_refit_brings_held_out_outputs_closer_to_the_unpruned_model(name):
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model, task = cls().eval(), prune.example_task(shape)
    cut = prune.apply(model, prune.Config(ratio=0.5, round_to=1, refit=False), task)
    fitted = copy.deepcopy(cut.model)
    facts = refit.refit(fitted, model, refit.pruned_pairs(cut.storage.options["pruning"][0]["cuts"]), calibration(task))
    held_out = torch.randn(64, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(held_out)
        error = {k: float((m(held_out) - reference).pow(2).mean()) for k, m in (("cut", cut.model), ("fit", fitted))}
    assert facts["layers"] > 0 and "skipped" not in facts and facts["inputs"] == task.calib_data.num_samples
    assert error["fit"] < 0.7 * error["cut"], error
    rebuilt = prune.rebuild(model, cut.storage.options["pruning"])  # no parameter added: the record still replays
    rebuilt.load_state_dict(fitted.state_dict())


def _mlp_with_a_duplicate_unit():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        ref[0].weight[4], ref[0].bias[4] = ref[0].weight[1], ref[0].bias[1]
    keep = [0, 1, 2, 3]
    pruned = copy.deepcopy(ref)
    pruned[0], pruned[2] = nn.Linear(6, 4), nn.Linear(4, 3)
    with torch.no_grad():
        pruned[0].weight.copy_(ref[0].weight[keep]), pruned[0].bias.copy_(ref[0].bias[keep])
        pruned[2].weight.copy_(ref[2].weight[:, keep]), pruned[2].bias.copy_(ref[2].bias)
    cuts = [{"layer": "0", "axis": "out", "size": 5, "kept": keep}, {"layer": "2", "axis": "in", "size": 5, "kept": keep}]
    return ref, pruned, cuts


def test_a_removed_unit_that_a_kept_one_duplicates_is_recovered_almost_exactly():
    ref, pruned, cuts = _mlp_with_a_duplicate_unit()
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = float((pruned(x) - ref(x)).abs().max())
        facts = refit.refit(pruned, ref, refit.pruned_pairs(cuts), [(x[:128],), (x[128:],)])
        after = float((pruned(x) - ref(x)).abs().max())
    assert facts["layers"] == 1 and before > 0.05
    assert after < 0.05 * before, (before, after)


class SamePadConv(nn.Conv2d):
    """TensorFlow "SAME" padding done in forward (EfficientNet's style): the extra row and column go last."""

    def forward(self, x):
        pads = []
        for dim in (-1, -2):
            k, s = self.kernel_size[dim], self.stride[dim]
            out = -(-x.shape[dim] // s)
            total = max((out - 1) * s + k - x.shape[dim], 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.conv2d(nn.functional.pad(x, pads), self.weight, self.bias, self.stride, 0,
                                    self.dilation, self.groups)


class Doubled(nn.Conv2d):
    """A convolution subclass whose forward is not one plain convolution of its input."""

    def forward(self, x):
        return 2 * super().forward(x)


def _cut_first_conv(consumer):
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), consumer).eval()
    keep = [0, 2, 3, 5, 6, 7]
    pruned = copy.deepcopy(ref)
    first, last = nn.Conv2d(3, 6, 1), copy.deepcopy(consumer)
    last.weight = nn.Parameter(consumer.weight.detach()[:, keep].clone())
    last.in_channels = 6
    with torch.no_grad():
        first.weight.copy_(ref[0].weight[keep]), first.bias.copy_(ref[0].bias[keep])
    pruned[0], pruned[2] = first, last
    cuts = [{"layer": "0", "axis": "out", "size": 8, "kept": keep}, {"layer": "2", "axis": "in", "size": 8, "kept": keep}]
    return ref, pruned, cuts


def test_a_convolution_that_pads_itself_is_refitted_with_its_own_padding():
    ref, pruned, cuts = _cut_first_conv(SamePadConv(8, 4, 3, stride=2, bias=False))
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        own = pruned[2](pruned[1](pruned[0](x)))
        assert refit.applied_padding(pruned[2], pruned[1](pruned[0](x)), own) == [0, 1, 0, 1]
        before = float((pruned(x) - ref(x)).pow(2).mean())
        facts = refit.refit(pruned, ref, refit.pruned_pairs(cuts), [(x,)])
        after = float((pruned(x) - ref(x)).pow(2).mean())
    assert facts["layers"] == 1 and "skipped" not in facts and pruned[2].bias is None
    assert after < 0.5 * before, (before, after)


def test_a_layer_the_refit_cannot_reproduce_is_left_as_it_is_with_the_reason():
    ref, pruned, cuts = _cut_first_conv(Doubled(8, 4, 3, padding=1))
    weight = pruned[2].weight.detach().clone()
    facts = refit.refit(pruned, ref, refit.pruned_pairs(cuts), [(torch.randn(4, 3, 6, 6),)])
    assert facts["layers"] == 0 and "more than one zero-padded convolution" in facts["skipped"]["2"]
    assert torch.equal(pruned[2].weight, weight)


@pytest.mark.parametrize("after, kept", [(0.2, False), (0.7, True)])
def test_the_refit_is_kept_only_when_the_validation_score_does_not_drop(monkeypatch, after, kept):
    torch.manual_seed(0)
    model, task = TinyResNet().eval(), prune.example_task((1, 16, 16))
    plain = prune.apply(model, prune.Config(ratio=0.5, round_to=1, refit=False), task)
    scores = iter([0.5, after, 1.0])  # refit_round scores: the cut model, the re-fitted one, the unpruned one
    monkeypatch.setattr(distill, "validation_score", lambda m, t, d: next(scores))
    applied = prune.apply(model, prune.Config(ratio=0.5, round_to=1), task)
    assert applied.facts["prune_refit"]["kept"] is kept
    rec = applied.facts["recovery"]
    assert (rec["by"], rec["score_before"], rec["labels"]) == ("refit", 0.5, False)
    assert rec["score_after"] == (0.7 if kept else 0.5) and rec["regained"] == (0.4 if kept else 0.0)
    same = all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), applied.model.state_dict().values()))
    assert same is not kept


def test_the_result_notes_say_what_the_refit_regained_or_why_it_was_undone():
    from types import SimpleNamespace

    rec = {"by": "refit", "score_before": 0.5, "score_after": 0.7, "score_teacher": 1.0, "regained": 0.4, "inputs": 96}
    result = SimpleNamespace(facts={"recovery": rec, "prune_refit": {"layers": 3, "seconds": 1.5, "kept": True}},
                             latency_ratio={}, latency_verdict={})
    [line] = prune.explain(result)
    assert "regained 40%" in line and "96 unlabelled calibration inputs" in line and "Less than half" in line
    assert distill.explain(result) == [] and lowrank.explain(result) == []  # each step explains its own
    result.facts["prune_refit"]["kept"] = False
    assert "weights were kept as they were" in prune.explain(result)[0]


def test_lowrank_refits_the_last_factor_of_each_split_layer(monkeypatch):
    torch.manual_seed(0)
    model, task = TinyTransformer().eval(), prune.example_task((8, 8))
    plain = lowrank.apply(model, lowrank.Config(rank_by="param_ratio", param_ratio=0.3, refit=False), task)
    scores = iter([0.5, 0.7, 1.0])  # the random-label validation score would decide by chance: the fit is kept
    monkeypatch.setattr(distill, "validation_score", lambda m, t, d: next(scores))
    fitted = lowrank.apply(model, lowrank.Config(rank_by="param_ratio", param_ratio=0.3), task)
    held_out = torch.randn(64, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(held_out)
        error = {k: float((m.model(held_out) - reference).pow(2).mean()) for k, m in (("plain", plain), ("fit", fitted))}
    fit = fitted.facts["lowrank_refit"]
    assert fit["kept"] and fit["layers"] == len(fitted.facts["ranks"]) > 0 and "skipped" not in fit
    assert error["fit"] < 0.7 * error["plain"], error
    assert "regained 40%" in lowrank.explain(fitted)[0]
