"""Distillation and fine-tuning: the loss, students, recovery with train hooks, teachers, clear errors.

Training runs use one thread: these models are too small to gain from two, and one thread keeps the
tests fast on a busy machine."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from modelpress.compress import Applied
from modelpress.compress import distill, finetune
from modelpress.compress._students import count_params, derive
from modelpress.config import parse
from modelpress.errors import ConfigError, ModelpressError
from modelpress.evaluate import evaluate, torch_predict
from modelpress.task import Batches, Task
from modelpress.zoo import LeNet5, TinyTransformer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_task(shape, n=64, build=lambda: None, train=True):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(0, 10, n)
    return Task(name="random", build_model=build, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x[:32]}, batch_size=16), val_data=Batches({"x": x}, y, batch_size=32),
                test_data=Batches({"x": x}, y, batch_size=32),
                train_data=Batches({"x": x}, y, batch_size=32, shuffle=True) if train else None, num_classes=10)


def score(model, task):
    return evaluate(torch_predict(model, task), task, task.test_data)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("settings, needle", [
    ({"alpha": -0.1}, "alpha must be in \\[0, 1\\]"), ({"alpha": 1.5}, "alpha must be in \\[0, 1\\]"),
    ({"temperature": 0}, "temperature must be positive"), ({"temperature": -2}, "temperature must be positive"),
    ({"width": 0}, "width must be in"), ({"student": "tiny"}, "'model', 'smaller'"),
    ({"features": ["a=b=c"]}, "student_layer=teacher_layer"), ({"loss": "kld"}, "Did you mean 'kl'"),
])
def test_bad_distill_settings_fail_clearly(settings, needle):
    with pytest.raises(ConfigError, match=needle):
        parse(distill.Config, settings, "distill")


def test_soft_loss_is_t_squared_kl_of_softened_distributions():
    torch.manual_seed(0)
    s, t, temp = torch.randn(8, 10), torch.randn(8, 10), 4.0
    p_t, p_s = torch.softmax(t / temp, -1), torch.softmax(s / temp, -1)
    expected = temp ** 2 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.isclose(distill.soft_loss("kl", s, t, temp), expected, atol=1e-6)
    assert distill.soft_loss("kl", t, t, temp).abs() < 1e-6
    assert torch.isclose(distill.soft_loss("mse", s, t, temp), ((s - t) ** 2).mean())
    assert distill.soft_loss("cosine", 3 * t, t, temp).abs() < 1e-6  # scale-free


def test_teacher_and_student_outputs_of_different_shapes_fail_clearly():
    task = random_task((1, 28, 28))
    student = nn.Sequential(nn.Flatten(), nn.Linear(784, 5))
    with pytest.raises(ModelpressError, match=r"teacher's outputs have shapes \[\(32, 10\)\].*\[\(32, 5\)\]"):
        distill.distill(student, LeNet5().eval(), task, distill.Config())


def test_empty_or_missing_training_data_fails_clearly():
    task = random_task((1, 28, 28))
    empty = dataclasses.replace(task, train_data=Batches({"x": np.zeros((0, 1, 28, 28), np.float32)},
                                                         np.zeros(0, np.int64)))
    with pytest.raises(ModelpressError, match="training data is empty"):
        distill.apply(LeNet5(), distill.Config(), empty)
    with pytest.raises(ModelpressError, match="no train_data.*data: calib"):
        distill.apply(LeNet5(), distill.Config(), random_task((1, 28, 28), train=False))
    with pytest.raises(ModelpressError, match="no train_data"):
        finetune.apply(LeNet5(), finetune.Config(), random_task((1, 28, 28), train=False))


def test_without_a_reference_model_the_incoming_model_teaches_and_is_not_modified():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), random_task((1, 28, 28))
    before = copy.deepcopy(model)
    out = distill.apply(model, distill.Config(), task)
    assert same_weights(model, before) and not same_weights(out.model, before)
    assert out.facts["distill"]["teacher"] == "incoming model (the task has no reference model)"


def test_unlabeled_calibration_inputs_suffice():
    torch.manual_seed(0)
    teacher, task = LeNet5().eval(), random_task((1, 28, 28), train=False)
    student = distill.apply(teacher, distill.Config(teacher="model", data="calib", epochs=2), task)
    assert student.facts["distill"]["params_student"] == count_params(teacher)


def test_half_width_student_of_the_digits_cnn_stays_close(digits_task, digits_model):
    before = copy.deepcopy(digits_model)
    config = parse(distill.Config, {"student": "smaller", "width": 0.5, "epochs": 3, "lr": 2e-3,
                                            "threads": 1}, "distill")
    applied = distill.apply(digits_model, config, digits_task)
    student = applied.model
    assert same_weights(digits_model, before)  # the teacher / incoming model is left alone
    assert count_params(student) <= 0.3 * count_params(digits_model)
    assert score(student, digits_task) >= score(digits_model, digits_task) - 0.03
    assert applied.facts["distill"]["params_student"] == count_params(student)


class RowMask:
    """A pruning-style train hook: rows of one linear layer stay zero (found by name: survives deepcopy)."""

    def __init__(self, name, rows):
        self.name, self.rows = name, rows

    def after_step(self, model):
        with torch.no_grad():
            model.get_submodule(self.name).weight[self.rows] = 0
            model.get_submodule(self.name).bias[self.rows] = 0


def damaged(model):
    """Half of the hidden units of the classifier removed (and kept removed by a hook an earlier step hands
    on), first conv noised."""
    model = copy.deepcopy(model)
    RowMask("classifier.1", slice(0, 64)).after_step(model)
    with torch.no_grad():
        torch.manual_seed(0)
        model.features[0].weight.add_(0.3 * torch.randn_like(model.features[0].weight))
    return Applied.of(model).then(train_hooks=(RowMask("classifier.1", slice(0, 64)),))


@pytest.mark.parametrize("technique, settings", [(distill, {"epochs": 1, "lr": 1e-3, "threads": 1}),
                                                 (finetune, {"epochs": 1, "lr": 1e-3, "threads": 1})])
def test_recovery_respects_train_hooks(technique, settings, digits_task, digits_model):
    broken = damaged(digits_model)
    base, lost = score(digits_model, digits_task), score(broken.model, digits_task)
    assert base - lost > 0.05  # the damage is real
    out = technique.apply(broken, parse(technique.Config, settings, "step"), digits_task)
    assert score(out.model, digits_task) >= base - 0.3 * (base - lost)  # recovers most of what was lost
    assert torch.count_nonzero(out.model.classifier[1].weight[:64]) == 0  # the mask held through training
    assert out.train_hooks == broken.train_hooks  # and is handed on to later steps


def test_feature_distillation_learns_a_projection_for_a_narrower_student():
    torch.manual_seed(0)
    teacher, task = LeNet5().eval(), random_task((1, 28, 28))
    student = derive(teacher, torch.zeros(2, 1, 28, 28), width=0.5)
    assert isinstance(distill.projection(torch.Size([4, 25, 8, 8]), torch.Size([4, 50, 8, 8]), "f"), nn.Conv2d)
    with pytest.raises(ModelpressError, match="differ in more than their width"):
        distill.projection(torch.Size([4, 25, 8, 8]), torch.Size([4, 50, 4, 4]), "f")
    config = distill.Config(features=("features.3", "classifier.1=classifier.1"), feature_weight=1.0)
    before = student.features[0].weight.clone()
    distill.distill(student, teacher, task, config)
    assert not torch.equal(student.features[0].weight, before)
    with pytest.raises(ConfigError, match="student layer.*nope not found"):
        distill.distill(student, teacher, task, distill.Config(features=("nope",)))


def test_transformer_student_keeps_fewer_blocks():
    torch.manual_seed(0)
    teacher = TinyTransformer().eval()
    task = random_task((8, 8), build=lambda: copy.deepcopy(teacher))
    student = distill.apply(teacher, distill.Config(student="smaller"), task).model
    assert len(student.blocks) == 1 and student(torch.zeros(2, 8, 8)).shape == (2, 10)
    assert not torch.equal(student.blocks[0].ffn[0].weight, teacher.blocks[0].ffn[0].weight)  # it trained
    with pytest.raises(ConfigError, match="not supported.*shrink: depth"):
        distill.apply(teacher, distill.Config(student="smaller", shrink="width"), task)


def test_finetune_trains_only_included_layers():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), random_task((1, 28, 28))
    out = finetune.apply(model, finetune.Config(include=("classifier.*",), lr=1e-2), task).model
    assert torch.equal(out.features[0].weight, model.features[0].weight)
    assert not torch.equal(out.classifier[3].weight, model.classifier[3].weight)
    assert all(p.requires_grad for p in out.parameters())  # freezing is undone afterwards


def test_bad_calls_leave_the_models_clean():
    torch.manual_seed(0)
    model, task = LeNet5().eval(), random_task((1, 28, 28))
    with pytest.raises(ModelpressError, match="same module"):
        distill.distill(model, model, task)
    student = copy.deepcopy(model)
    with pytest.raises(ConfigError, match="matches no layer"):
        distill.distill(student, model, task, distill.Config(include=("conv*",), features=("features.3",)))
    with pytest.raises(ConfigError, match="teacher layer.*nope not found"):
        distill.distill(student, model, task, distill.Config(features=("features.3=nope",)))
    assert not any(m._forward_hooks for m in [*student.modules(), *model.modules()])  # no capture hook left behind
    assert all(p.requires_grad for p in student.parameters())
