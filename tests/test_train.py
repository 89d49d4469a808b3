"""The shared training loop: determinism, unlabeled data, threads, early stopping, hooks, clear errors."""
import numpy as np
import pytest
import torch
from torch import nn

from modelpress.train import TrainConfig, fit, frozen_parameters, supervised_loss
from modelpress.config import parse
from modelpress.errors import ConfigError, ModelpressError
from modelpress.task import Batches


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def data(n=64, labels=True, shuffle=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)  # a learnable rule
    return Batches({"x": x}, y if labels else None, batch_size=16, shuffle=shuffle, seed=1)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))


def accuracy(model, batches):
    x, y = batches.arrays["x"], batches.targets
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())


def test_same_config_gives_identical_weights_and_leaves_data_untouched():
    d = data()
    a, b = fit(mlp(), d, TrainConfig(epochs=2, lr=1e-2)), fit(mlp(), d, TrainConfig(epochs=2, lr=1e-2))
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert d._epoch == 0  # the caller's batches were not advanced (nothing the user gave is modified)
    c = fit(mlp(), d, TrainConfig(epochs=2, lr=1e-2, seed=5))
    assert not torch.equal(a[0].weight, c[0].weight)


def test_training_learns_and_returns_eval_mode():
    d = data(256)
    model = fit(mlp(), d, TrainConfig(epochs=8, lr=1e-2))
    assert not model.training and accuracy(model, d) >= 0.9


def test_repr_is_unchanged_for_reference_model_cache_keys():
    # The built-in tasks key their cached reference models on repr(TrainConfig(...)); new fields must not
    # change it, or every cached model would be retrained.
    expected = ("TrainConfig(epochs=6, lr=0.002, weight_decay=0.0001, optimizer='adamw', momentum=0.9, seed=0, "
                "patience=None)")
    assert repr(TrainConfig(epochs=6, lr=2e-3, seed=0)) == expected
    assert repr(TrainConfig(epochs=6, lr=2e-3, seed=0, threads=1)) == expected


def test_threads_are_set_while_training_and_restored():
    seen = []

    def loss_fn(model, inputs, target):
        seen.append(torch.get_num_threads())
        return nn.functional.cross_entropy(model(inputs["x"]), target)

    before = torch.get_num_threads()
    fit(mlp(), data(), TrainConfig(epochs=1, threads=2), loss_fn)
    assert set(seen) == {2} and torch.get_num_threads() == before == 1


def test_unlabeled_batches_train_on_a_teacher_and_fail_clearly_without_one():
    teacher = fit(mlp(seed=3), data(256), TrainConfig(epochs=8, lr=1e-2))
    unlabeled = data(256, labels=False)

    def from_teacher(model, inputs, target):
        assert target is None
        with torch.no_grad():
            soft = torch.softmax(teacher(inputs["x"]), -1)
        return nn.functional.cross_entropy(model(inputs["x"]), soft)

    student = fit(mlp(seed=4), unlabeled, TrainConfig(epochs=8, lr=1e-2), from_teacher)
    with torch.no_grad():
        x = torch.from_numpy(unlabeled.arrays["x"])
        agree = (student(x).argmax(-1) == teacher(x).argmax(-1)).float().mean()
    assert agree >= 0.9
    with pytest.raises(ModelpressError, match="no labels"):
        fit(mlp(), unlabeled, TrainConfig(epochs=1))


def test_empty_or_missing_training_data_is_a_clear_error():
    empty = Batches({"x": np.zeros((0, 6), np.float32)}, np.zeros(0, np.int64))
    with pytest.raises(ModelpressError, match="training data is empty"):
        fit(mlp(), empty, TrainConfig(epochs=1))
    with pytest.raises(ModelpressError, match="training data is empty"):
        fit(mlp(), (b for b in []), TrainConfig(epochs=1))  # no len(): found after one pass
    with pytest.raises(ModelpressError, match="no train_data"):
        fit(mlp(), None, TrainConfig(epochs=1))


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95, 0.99])
    states, calls = [], []

    def evaluate(model):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        calls.append(1)
        return next(scores)

    model = fit(mlp(), data(), TrainConfig(epochs=6, lr=1e-2, patience=2), evaluate=evaluate)
    assert len(calls) == 4  # best at epoch 2, two stale epochs, stop
    assert all(torch.equal(model.state_dict()[k], states[1][k]) for k in states[1])


def test_lower_is_better_metric_keeps_the_lowest_epoch():
    scores = iter([3.0, 1.0, 2.0])
    states = []

    def evaluate(model):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    model = fit(mlp(), data(), TrainConfig(epochs=3, lr=1e-2), evaluate=evaluate, higher_is_better=False)
    assert all(torch.equal(model.state_dict()[k], states[1][k]) for k in states[1])


class ZeroMask:
    """A pruning-style hook: re-zero the first 8 rows of layer 0 after each step."""

    def __init__(self):
        self.before = 0

    def before_step(self, model):
        self.before += 1

    def after_step(self, model):
        with torch.no_grad():
            model.get_submodule("0").weight[:8] = 0


def test_train_hooks_run_around_every_step():
    model, hook = mlp(), ZeroMask()
    fit(model, data(), TrainConfig(epochs=2, lr=1e-2), hooks=[hook])
    assert hook.before == 2 * 4 and torch.count_nonzero(model[0].weight[:8]) == 0


def test_extra_parameters_train_and_frozen_layers_do_not():
    model, extra = mlp(), nn.Parameter(torch.zeros(2))
    frozen = frozen_parameters(model, ("2",), ())
    assert [p.shape for p in frozen] == [torch.Size([16, 6]), torch.Size([16])]
    for p in frozen:
        p.requires_grad_(False)
    before = model[0].weight.clone()

    def loss_fn(m, inputs, target):
        return nn.functional.cross_entropy(m(inputs["x"]) + extra, target)

    fit(model, data(), TrainConfig(epochs=1, lr=1e-2), loss_fn, extra_parameters=[extra])
    assert torch.equal(model[0].weight, before) and torch.count_nonzero(extra) > 0
    with pytest.raises(ConfigError, match="matches no layer.*Eligible layers: 0, 2"):
        frozen_parameters(model, ("conv*",), ())


def test_supervised_loss_picks_cross_entropy_or_mse_and_checks_shapes():
    out = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert torch.isclose(supervised_loss(out, torch.tensor([0, 1])), nn.functional.cross_entropy(out, torch.tensor([0, 1])))
    assert supervised_loss(out, out.clone()) == 0
    with pytest.raises(ModelpressError, match="do not match model outputs"):
        supervised_loss(out, torch.zeros(2, 3))
    with pytest.raises(ModelpressError, match="do not fit model outputs"):
        supervised_loss(out, torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("settings, needle", [
    ({"epochs": -1}, "epochs must be >= 0"), ({"lr": 0}, "lr must be positive"),
    ({"threads": 0}, "threads must be at least 1"), ({"patience": 0}, "patience must be >= 1"),
    ({"optimizer": "adam"}, "Did you mean 'adamw'"), ({"momentum": 1.0}, "momentum must be in"),
])
def test_bad_train_settings_fail_clearly(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        parse(TrainConfig, settings, "train")


def test_diverging_training_is_reported():
    def nan_loss(model, inputs, target):
        return model(inputs["x"]).sum() * float("nan")

    with pytest.raises(ModelpressError, match="diverged.*lower lr"):
        fit(mlp(), data(), TrainConfig(epochs=1), nan_loss)
