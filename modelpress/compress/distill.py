"""Knowledge distillation: train a student on a teacher's outputs (and optionally its hidden features).

Loss for class outputs: ``L = alpha * CE(y, p_s) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)``, where ``p^T``
is the softmax at temperature ``T`` (the ``T^2`` keeps the gradient scale of the soft term independent
of ``T``). For embedding or regression outputs the soft term is the MSE or cosine distance to the
teacher's outputs. Intermediate features add ``feature_weight * MSE(proj(h_s), h_t)`` per named layer,
with a learned 1x1-conv/linear projection ``proj`` where the student is narrower than the teacher.

Students: the incoming model (``student: model``: recovery after pruning, clustering, factorization or
quantization-aware training), a smaller copy of it (``student: smaller``: narrower CNN/MLP or fewer
transformer blocks, see ``_students``), or any module through :func:`distill`. The teacher is the task's
uncompressed model (``task.build_model()``), a weights file for the task's architecture, or a frozen copy
of the incoming model (``teacher: model``, also used when the task has no reference model).

>>> from modelpress.compress.distill import Config
>>> Config(epochs=2, alpha=0.5, temperature=4.0).alpha
0.5
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from . import Applied, Tools
from ..train import (TrainConfig, all_outputs, first_batch, fit, forward, frozen_parameters, main_output, split_batch,
                     supervised_loss, task_evaluator, to_tensors, train_data_for)
from ..config import check
from ..errors import ConfigError, ModelpressError
from ..task import Batches

RECOVERY_SAMPLES = 512  # validation samples scored before and after distilling (the recovery facts)

SEARCH_SPACE: dict[str, list] = {
    "alpha": [0.5, 0.1, 0.9],
    "temperature": [4.0, 2.0, 8.0],
    "epochs": [1, 3],
}


@dataclass(frozen=True)
class Config(TrainConfig):
    epochs: int = 1
    alpha: float = 0.5  # weight of the label loss; 1 - alpha weighs the teacher term
    temperature: float = 4.0  # softens both distributions of the KL term
    loss: Literal["auto", "kl", "mse", "cosine"] = "auto"  # auto: kl for classifiers, else mse
    teacher: str = "task"  # task (uncompressed model) | model (frozen copy of the incoming model) | weights file
    student: Literal["model", "smaller"] = "model"  # the incoming model, or a smaller copy of it
    shrink: Literal["auto", "width", "depth"] = "auto"  # smaller student: auto = depth for attention stacks
    width: float = 0.5  # share of channels/neurons a narrower student keeps
    depth: float = 0.5  # share of blocks a shallower student keeps
    init: Literal["teacher", "random"] = "teacher"  # smaller student: inherit teacher weights or start fresh
    features: tuple[str, ...] = ()  # layers whose outputs are matched: "name" or "student_name=teacher_name"
    feature_weight: float = 1.0
    labels: bool = True  # false: train on the inputs alone, the teacher's outputs are the only targets
    # calib: the task's (unlabeled) calibration inputs; augmented: those plus augmented copies (task.unlabelled)
    data: Literal["train", "calib", "augmented"] = "train"
    samples: int = 2048  # data: augmented: how many inputs per epoch (the calibration inputs among them)
    batch_size: int | None = None  # None: the task's batch size
    include: tuple[str, ...] = ()  # layers that train (fnmatch on module names); others stay frozen
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1] (the weight of the label loss), got {self.alpha}.")
        check(self.temperature > 0, f"temperature must be positive, got {self.temperature}.")
        check(0 < self.width <= 1, f"width must be in (0, 1], got {self.width}.")
        check(0 < self.depth <= 1, f"depth must be in (0, 1], got {self.depth}.")
        check(self.feature_weight >= 0, f"feature_weight must be >= 0, got {self.feature_weight}.")
        check(bool(self.teacher), "teacher must be 'task', 'model' or the path of a weights file.")
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}.")
        check(self.samples >= 1, f"samples must be at least 1 (the number of augmented inputs), got {self.samples}.")
        for f in self.features:
            check(f.count("=") <= 1 and all(f.split("=")), f"features entry '{f}' must be 'layer' or 'student_layer=teacher_layer'.")


def load_teacher(model: nn.Module, config: Config, task: Any) -> tuple[nn.Module, str]:
    """(teacher, what it is). A task without a reference model falls back to a frozen copy of ``model``."""
    if config.teacher == "model":
        return copy.deepcopy(model), "incoming model"
    built = task.build_model()
    if config.teacher == "task":
        if built is None:
            return copy.deepcopy(model), "incoming model (the task has no reference model)"
        return built, "task model"
    if built is None:
        raise ConfigError(f"teacher '{config.teacher}' is a weights file, but the task builds no model to load "
                          f"it into; use teacher: model or teacher: task.")
    from ..load import load_into

    return load_into(built, config.teacher), config.teacher


def loss_kinds(config: Config, task: Any) -> list[str]:
    """The teacher term per output: ``auto`` is kl for a classifier's class scores (an output of kind
    ``logits`` of a task with classes), else mse."""
    if config.loss != "auto":
        return [config.loss] * len(task.output_names)
    return ["kl" if kind == "logits" and task.num_classes is not None else "mse" for kind in task.output_kinds]


def soft_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher term: T^2 * KL over the last axis (mean over the other axes), MSE, or 1 - cosine."""
    if kind == "kl":
        log_s = torch.log_softmax(student / temperature, dim=-1)
        log_t = torch.log_softmax(teacher / temperature, dim=-1)
        return (log_t.exp() * (log_t - log_s)).sum(-1).mean() * temperature ** 2
    if kind == "mse":
        return nn.functional.mse_loss(student, teacher)
    cos = nn.functional.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)
    return (1 - cos).mean()


class Capture:
    """Forward hooks that keep the outputs of named layers of one model (for feature distillation)."""

    def __init__(self, model: nn.Module, names: list[str], role: str):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(f"features: {role} layer(s) {', '.join(missing)} not found. Layers: "
                              f"{', '.join(n for n in modules if n)}.")
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[n].register_forward_hook(self._keep(n)) for n in names]

    def _keep(self, name: str):
        def hook(module, args, output):
            self.outputs[name] = main_output(output)
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def projection(student_shape: torch.Size, teacher_shape: torch.Size, pair: str) -> nn.Module:
    """Identity when widths match; a learned 1x1 conv (channel axis 1 of [N, C, H, W]) or linear (last axis)."""
    if student_shape == teacher_shape:
        return nn.Identity()
    axis = 1 if len(student_shape) == 4 else -1
    s_rest = [d for i, d in enumerate(student_shape) if i != axis % len(student_shape)]
    t_rest = [d for i, d in enumerate(teacher_shape) if i != axis % len(teacher_shape)]
    if len(student_shape) != len(teacher_shape) or s_rest != t_rest:
        raise ModelpressError(f"features '{pair}': student output {tuple(student_shape)} and teacher output "
                              f"{tuple(teacher_shape)} differ in more than their width; choose layers of matching "
                              f"spatial/sequence size.")
    if axis == 1:
        return nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
    return nn.Linear(student_shape[-1], teacher_shape[-1], bias=False)


def training_inputs(task: Any, config: Config) -> Any:
    """The batches ``config.data`` names: the task's training data (without labels if ``labels: false``), its
    calibration inputs, or ``config.samples`` inputs from ``task.unlabelled`` (calibration inputs, then
    augmented copies of them), shuffled by ``config.seed``."""
    if config.data == "train":
        return train_data_for(task, config.batch_size, labels=config.labels)
    if config.data == "calib":
        data = task.calib_data
    else:
        make = getattr(task, "unlabelled", None)
        if make is None:
            raise ConfigError(f"data: augmented needs a task that makes augmented inputs from its calibration data "
                              f"(Task.unlabelled); the task '{task.name}' has none. Use data: calib (its "
                              f"{task.calib_data.num_samples} calibration inputs, for more epochs) or, with training "
                              f"data, data: train with labels: false.")
        made = make(config.samples, config.seed)
        data = Batches(made.arrays, None, made.batch_size, shuffle=True, seed=config.seed)
    return data if config.batch_size is None else data.with_batch_size(config.batch_size)


def distill(student: nn.Module, teacher: nn.Module, task: Any, config: Config = Config(),
            teacher_name: str = "teacher", hooks: tuple[Any, ...] = ()) -> nn.Module:
    """Train ``student`` in place from ``teacher`` (left unchanged) on the task's data; returns the student.

    Any student works (yours, or one from ``_students.derive``) as long as its outputs have the teacher's shape.
    ``hooks``: the train hooks of the techniques applied to the student before (they keep its structure).
    """
    if student is teacher:
        raise ModelpressError("The student and the teacher are the same module; distill into a copy "
                              "(copy.deepcopy(model)) or use distill.apply, which copies.")
    names = list(task.input_names)
    data = training_inputs(task, config)
    inputs, _ = split_batch(first_batch(data))
    kinds = loss_kinds(config, task)
    pairs = [(f.split("=")[0], f.split("=")[-1]) for f in config.features]
    frozen = frozen_parameters(student, config.include, config.exclude)
    teacher_was_training = teacher.training
    captures: list[Capture] = []
    try:
        captures.append(Capture(student, [s for s, _ in pairs], "student"))
        captures.append(Capture(teacher, [t for _, t in pairs], "teacher"))
        s_cap, t_cap = captures
        teacher.eval()
        with torch.no_grad():
            x = to_tensors(inputs)
            t_outs, s_outs = all_outputs(forward(teacher, x, names)), all_outputs(forward(student.eval(), x, names))
        if [t.shape for t in t_outs] != [o.shape for o in s_outs]:
            raise ModelpressError(f"The teacher's outputs have shapes {[tuple(t.shape) for t in t_outs]} but the "
                                  f"student's have {[tuple(o.shape) for o in s_outs]}; distillation needs outputs of "
                                  f"the same shape (same classes or embedding width). Give a student with the "
                                  f"teacher's output layers.")
        if len(kinds) != len(t_outs):
            kinds = (kinds * len(t_outs))[:len(t_outs)]  # a task that names fewer outputs than the model gives
        torch.manual_seed(config.seed)  # the projections' initial weights
        proj = nn.ModuleDict({str(i): projection(s_cap.outputs[s].shape, t_cap.outputs[t].shape, f"{s}={t}")
                              for i, (s, t) in enumerate(pairs)})

        def loss_fn(model: nn.Module, x: dict[str, torch.Tensor], target: torch.Tensor | None) -> torch.Tensor:
            with torch.no_grad():
                t_outs = all_outputs(forward(teacher, x, names))
            s_outs = all_outputs(forward(model, x, names))
            # every output learns from the teacher's; labels (if any) belong to the first output
            loss = sum(soft_loss(k, s, t, config.temperature) for k, s, t in zip(kinds, s_outs, t_outs))
            if target is not None and config.alpha > 0:
                loss = config.alpha * supervised_loss(s_outs[0], target) + (1 - config.alpha) * loss
            for i, (s, t) in enumerate(pairs):
                feature = proj[str(i)](s_cap.outputs[s])
                loss = loss + config.feature_weight * nn.functional.mse_loss(feature, t_cap.outputs[t])
            return loss

        for p in frozen:
            p.requires_grad_(False)
        evaluate = task_evaluator(task) if config.patience is not None else None
        fit(student, data, config.train_config(), loss_fn, evaluate, f"distilling from {teacher_name}",
            higher_is_better=task.higher_is_better, extra_parameters=list(proj.parameters()), hooks=hooks)
    finally:
        for capture in captures:
            capture.close()
        teacher.train(teacher_was_training)
        for p in frozen:
            p.requires_grad_(True)
    return student


def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``), before it
    runs: the epochs over the training set (or ``samples`` augmented inputs), each with the teacher's forward
    pass beside the student's training step, and scoring three models for the recovery facts."""
    inputs = config.samples if config.data == "augmented" else profile.train_samples
    epochs = 1.4 * 3.0 * profile.sample_s * inputs * config.epochs
    return 1.0 + epochs + 3 * profile.forward_s(min(RECOVERY_SAMPLES, profile.val_samples))


def apply(model: nn.Module | Applied, config: Config, task: Any, tools: Tools = Tools()) -> Applied:
    """Distill into a copy of the model (or a smaller student derived from it); the input is not modified."""
    from ._students import count_params, derive

    prev = Applied.of(model)
    teacher, teacher_name = load_teacher(prev.model, config, task)
    if config.student == "smaller":
        if prev.train_hooks:
            raise ConfigError("student: smaller rebuilds the model's layers, which would break the structure an "
                              "earlier step keeps while training (masks, clusters); put this distill step first "
                              "in the recipe.")
        example = tuple(torch.from_numpy(v) for v in task.example_inputs(2).values())
        student = derive(prev.model, example, config.shrink, config.width, config.depth, config.init, config.seed)
    else:
        student = copy.deepcopy(prev.model)
    val = task.val_data.take(RECOVERY_SAMPLES) if hasattr(task.val_data, "take") else task.val_data
    score_before = validation_score(student, task, val)
    distill(student, teacher, task, config, teacher_name, prev.train_hooks)
    facts = {"distill": {"teacher": teacher_name, "student": config.student, "loss": "+".join(loss_kinds(config, task)),
                         "alpha": config.alpha, "temperature": config.temperature, "epochs": config.epochs,
                         "params_student": count_params(student), "params_teacher": count_params(teacher)},
             "recovery": recovery(task, config, val, validation_score(teacher, task, val), score_before,
                                  validation_score(student, task, val))}
    return prev.then(student, facts=facts)


def validation_score(model: nn.Module, task: Any, data: Any) -> float:
    from ..evaluate import evaluate, torch_predict

    was_training = model.training
    try:
        return evaluate(torch_predict(model, task), task, data)
    finally:
        model.train(was_training)


def recovery(task: Any, config: Config, val: Any, teacher: float, before: float, after: float) -> dict[str, Any]:
    """The ``recovery`` facts: the task's validation score of the teacher, of the student before and after
    distilling, the share of the teacher-to-student gap distilling closed (``regained``; None without a
    gap), and what the student trained on."""
    source = {"train": task.train_data, "calib": task.calib_data}.get(config.data)
    inputs = config.samples if config.data == "augmented" else getattr(source, "num_samples", None)
    lost, left = task.score_drop(teacher, before), task.score_drop(teacher, after)
    return {"on": "validation", "samples": getattr(val, "num_samples", None),
            "score_teacher": round(teacher, 6), "score_before": round(before, 6), "score_after": round(after, 6),
            "regained": round((lost - left) / lost, 4) if lost > 1e-9 else None,
            "data": config.data, "labels": config.labels and config.data == "train",
            "inputs": inputs, "epochs": config.epochs}


def explain(result: Any) -> list[str]:
    """How much of the validation score the steps before distillation lost it won back (``recovery`` facts)."""
    rec = result.facts.get("recovery")
    if not rec or rec.get("by") == "refit":  # pruning's re-fit, which prune explains
        return []
    scores = (f"validation score {rec['score_before']:.4f} before, {rec['score_after']:.4f} after, teacher "
              f"{rec['score_teacher']:.4f}")
    trained = (f"{rec['inputs']} {'labelled' if rec['labels'] else 'unlabelled'} {rec['data']} inputs" if rec["inputs"]
               else f"the {rec['data']} data") + f", {rec['epochs']} epoch{'s' if rec['epochs'] != 1 else ''}"
    if rec["regained"] is None:
        return [f"distill: the model scored as well as its teacher before distilling ({scores}; {trained})."]
    if rec["regained"] < 0:
        return [f"distill made the model worse ({scores}; {trained}): try a lower lr, more epochs or more inputs."]
    more = " Less than half: try more epochs or inputs, or compress less." if rec["regained"] < 0.5 else ""
    return [f"distill regained {rec['regained']:.0%} of the score lost before it ({scores}; {trained}).{more}"]
