"""Pruning's round_to "auto" (the multiple is timed on the recipe's runtime through Tools.time_ratio; here a
fake timer stands in for it: speed is measured by benchmarks/prune_real.py, never in a unit test), its
validation, and the note a slower pruned result gets."""
import pytest
import torch
from torch import nn

from modelpress.compress import prune
from modelpress.compress._prune import roundto as prune_roundto
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.zoo import LeNet5, TinyResNet


def channel_counts(module):
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)] + \
           [m.out_features for m in module.modules() if isinstance(m, nn.Linear)][:-1]  # the output layer stays


def fast_at_multiples_of(k, calls):
    """A deterministic timer: a replacement whose every conv/hidden linear has a multiple of k channels
    runs at 0.5x, any other at 1.5x."""
    def time_ratio(original, replacement, x):
        calls.append((original, replacement, x.shape))
        return 0.5 if all(c % k == 0 for c in channel_counts(replacement)) else 1.5
    return time_ratio


def test_round_to_auto_without_a_timer_falls_back_to_16_and_says_so():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    applied = prune.apply(model, prune.Config(ratio=0.5), task)  # the default is auto
    assert prune.Config().round_to == "auto"
    assert applied.facts["prune_round_to"]["value"] == prune_roundto.DEFAULT == 16
    assert applied.facts["prune_round_to"]["chosen_by"] == "default"
    assert "no timer" in applied.facts["prune_round_to"]["why"]
    assert all(c % 16 == 0 for c in channel_counts(applied.model))
    given = prune.apply(model, prune.Config(ratio=0.5, round_to=8), task)
    assert "prune_round_to" not in given.facts  # a number given is used as is


def test_round_to_auto_chooses_the_smallest_fast_multiple_by_timing():
    from modelpress.compress import Tools

    torch.manual_seed(0)
    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    calls = []
    applied = prune.apply(model, prune.Config(ratio=0.3), task, Tools(time_ratio=fast_at_multiples_of(8, calls)))
    chosen = applied.facts["prune_round_to"]
    assert chosen["value"] == 8 and chosen["chosen_by"] == "measurement"
    assert chosen["timings"]["1"] == 1.5 and chosen["timings"]["8"] == 0.5
    assert set(chosen["timings"]) == {"1", "8", "16", "32"}
    counts_ = channel_counts(applied.model)
    assert all(c % 8 == 0 for c in counts_) and counts_ != channel_counts(model)
    assert all(original is model or original.state_dict().keys() == model.state_dict().keys()
               for original, _, _ in calls)
    assert all(shape == (1, 1, 28, 28) for _, _, shape in calls)  # the model's own input, batch 1
    assert len(calls) <= 4  # one timing per distinct plan


def test_round_to_auto_prefers_the_smallest_multiple_when_all_are_equally_fast():
    from modelpress.compress import Tools

    model, task = LeNet5().eval(), prune.example_task((1, 28, 28))
    applied = prune.apply(model, prune.Config(ratio=0.3), task, Tools(time_ratio=lambda a, b, x: 0.7))
    assert applied.facts["prune_round_to"]["value"] == 1
    unrounded = prune.apply(model, prune.Config(ratio=0.3, round_to=1), task).model
    assert channel_counts(applied.model) == channel_counts(unrounded)


def test_round_to_auto_with_a_model_the_timer_cannot_feed_uses_the_default():

    def never(*args):
        raise AssertionError("a two-input model must not be timed")

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 32), nn.Linear(32, 4)

        def forward(self, x, y):
            return self.b(torch.relu(self.a(x + y)))

    from modelpress.compress._prune import roundto
    example = (torch.zeros(1, 8), torch.zeros(1, 8))
    value, fact = roundto.choose(Two().eval(), prune.Config(ratio=0.5), None, example, never)
    assert value == 16 and fact["chosen_by"] == "default" and "one float input" in fact["why"]


@pytest.mark.parametrize("value, needle", [
    (0, "round_to must be 'auto'"),
    (-8, "round_to must be 'auto'"),
    ("fast", "round_to must be 'auto'.*got 'fast'"),
    ("Auto", "round_to must be 'auto'"),
    (2.5, "round_to"),
    (True, "round_to"),
])
def test_round_to_refuses_bad_values(value, needle):
    with pytest.raises(ConfigError, match=needle):
        parse(prune.Config, {"round_to": value}, "prune")
    assert parse(prune.Config, {"round_to": 16}, "prune").round_to == 16
    assert parse(prune.Config, {"round_to": "auto"}, "prune").round_to == "auto"


def test_search_space_offers_auto_first():
    assert prune.SEARCH_SPACE["round_to"][0] == "auto"
    for value in prune.SEARCH_SPACE["round_to"]:
        parse(prune.Config, {"round_to": value}, "prune")


def test_fine_tuning_without_training_data_is_a_clear_error_before_pruning():
    import dataclasses

    torch.manual_seed(0)
    model, task = TinyResNet().eval(), prune.example_task((1, 16, 16))
    with pytest.raises(ConfigError, match="epochs: 2.*no train_data.*epochs: 0"):
        prune.apply(model, prune.Config(epochs=2), dataclasses.replace(task, train_data=None))
    prune.apply(model, prune.Config(epochs=0, round_to=1), dataclasses.replace(task, train_data=None))


def test_a_slower_channel_pruned_result_gets_a_note_suggesting_round_to():
    from types import SimpleNamespace

    def result(verdict, facts):
        return SimpleNamespace(facts=facts, latency_ratio={"1": 1.6, "8": 0.9},
                               latency_verdict={"1": verdict, "8": "faster"})

    chosen = {"value": 1, "chosen_by": "measurement"}
    notes = prune.explain(result("slower", {"prune_method": "channel", "prune_round_to": chosen}))
    assert len(notes) == 1 and "batch 1: 1.60x" in notes[0] and "batch 8" not in notes[0]
    assert "round_to 1, chosen by measurement" in notes[0] and "round_to: 16" in notes[0]
    given16 = result("slower", {"prune_method": "channel"})
    given16.recipe = [{"prune": {"method": "channel", "round_to": 16}}]
    assert "round_to 16" in prune.explain(given16)[0] and "smaller ratio" in prune.explain(given16)[0]
    assert "Try round_to: 16" not in prune.explain(given16)[0]
    assert prune.explain(result("no measurable difference", {"prune_method": "channel"})) == []
    assert prune.explain(result("slower", {"prune_method": "magnitude"})) == []


def test_the_pipeline_notes_carry_the_slower_pruning_note():
    import dataclasses

    from modelpress.pipeline import notes
    from modelpress.result import Result

    names = {f.name for f in dataclasses.fields(Result)}
    result = Result(**{**dict.fromkeys(names), "facts": {"prune_method": "channel"}, "notes": [], "violations": [],
                       "latency_ratio": {"1": 1.7}, "latency_ratio_iqr": {"1": [1.6, 1.8]},
                       "latency_verdict": {"1": "slower"}, "latency_ms": {"1": {"p50": 3.0}},
                       "size_bytes": 70, "baseline_size_bytes": 100, "runtime": "onnxruntime"})
    said = notes(result, ["prune"])
    assert any("Channel pruning made the model slower" in n and "round_to: 16" in n for n in said)
