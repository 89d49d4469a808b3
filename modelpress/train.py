"""The one training loop for every technique that trains (and for the built-in reference models).

``fit`` runs AdamW or SGD with a cosine learning-rate schedule and deterministic seeds, sets the CPU
thread count for the run, shows a progress bar with the loss and the task metric, and can stop early on
that metric. Batches are ``(inputs, target)`` or inputs alone (unlabeled data): a custom ``loss_fn``
(distillation) then trains on a teacher's outputs instead of labels.

>>> config = TrainConfig(epochs=2, lr=1e-3, threads=1)  # then: fit(model, task.train_data, config)
>>> config.threads, config.optimizer
(1, 'adamw')
"""
from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .config import check
from .errors import ConfigError, ModelpressError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    seed: int = 0
    patience: int | None = None  # epochs without metric improvement before stopping; None = never
    # torch intra-op CPU threads while training (restored afterwards); None = leave torch's setting.
    # Left out of repr: reference-model caches key on repr(config), and the thread count is not part of
    # what is learned.
    threads: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}.")
        check(self.lr > 0, f"lr must be positive, got {self.lr}.")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}.")
        check(self.patience is None or self.patience >= 1, f"patience must be >= 1, got {self.patience}.")
        check(self.threads is None or self.threads >= 1, f"threads must be at least 1 (or null), got {self.threads}.")

    def train_config(self) -> TrainConfig:
        """Just the training-loop settings (technique Configs subclass TrainConfig and add their own)."""
        names = TrainConfig.__dataclass_fields__
        return TrainConfig(**{k: getattr(self, k) for k in names})


# loss_fn(model, inputs, target) -> scalar loss; ``target`` is None for unlabeled batches.
LossFn = Callable[[nn.Module, dict[str, torch.Tensor], "torch.Tensor | None"], torch.Tensor]


def to_tensors(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def forward(model: nn.Module, inputs: dict[str, torch.Tensor], input_names: Iterable[str] | None = None) -> Any:
    names = list(input_names) if input_names is not None else list(inputs)
    return model(*[inputs[n] for n in names])


def main_output(output: Any) -> torch.Tensor:
    """The tensor a metric reads: the output itself, ``.logits`` (Hugging Face) or the first of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ModelpressError(f"The model returned {type(output).__name__}; training needs a tensor, a tuple of "
                          f"tensors or an object with '.logits'.")


def all_outputs(output: Any) -> list[torch.Tensor]:
    """Every output tensor, in order: the output itself, ``.logits`` (Hugging Face) or each of a tuple."""
    if isinstance(output, (tuple, list)) and output and all(isinstance(t, torch.Tensor) for t in output):
        return list(output)
    return [main_output(output)]


def supervised_loss(output: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy for integer class targets, mean squared error for float targets of the output's shape."""
    if target is None:
        raise ModelpressError("These training batches have no labels. Train on labelled data, or distill from a "
                              "teacher on the unlabeled inputs (distill with labels: false).")
    if not torch.is_floating_point(target):
        if output.dim() < 2 or target.shape != output.shape[:1] + output.shape[2:]:
            raise ModelpressError(f"Class targets of shape {tuple(target.shape)} do not fit model outputs of shape "
                                  f"{tuple(output.shape)} (expected [N, classes] outputs for [N] targets).")
        return nn.functional.cross_entropy(output, target.long())
    if target.shape != output.shape:
        raise ModelpressError(f"Float targets of shape {tuple(target.shape)} do not match model outputs of shape "
                              f"{tuple(output.shape)}; regression targets must have the output's shape.")
    return nn.functional.mse_loss(output, target)


def cross_entropy(model: nn.Module, inputs: dict[str, torch.Tensor], target: torch.Tensor | None) -> torch.Tensor:
    """The default loss: the labels' loss on the model's main output (see :func:`supervised_loss`)."""
    return supervised_loss(main_output(forward(model, inputs)), target)


def split_batch(batch: Any) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``(inputs, target)`` or inputs alone -> (inputs, target or None)."""
    if isinstance(batch, tuple) and len(batch) == 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        return batch, None
    raise ModelpressError(f"A training batch must be a dict of input arrays or (inputs, target), got "
                          f"{type(batch).__name__}.")


def reseeded(train_data: Iterable, seed: int) -> Iterable:
    """A fresh copy of shuffled ``Batches`` whose order depends only on its seed plus ``seed``, so two
    ``fit`` calls with the same config see the same batches (``Batches`` reshuffles per iteration)."""
    from .task import Batches

    if isinstance(train_data, Batches) and train_data.shuffle:
        return Batches(train_data.arrays, train_data.targets, train_data.batch_size, True, train_data.seed + seed)
    return train_data


def first_batch(train_data: Iterable) -> Any:
    """The first batch of ``train_data``, or a clear error when there is none."""
    if train_data is None:
        raise ModelpressError("This step needs training data, but the task has no train_data.")
    it: Iterator = iter(train_data)
    try:
        return next(it)
    except StopIteration:
        raise ModelpressError("The training data is empty: give the task at least one training batch.") from None


def fit(model: nn.Module, train_data: Iterable, config: TrainConfig = TrainConfig(),
        loss_fn: LossFn = cross_entropy, evaluate: Callable[[nn.Module], float] | None = None,
        description: str = "train", *, higher_is_better: bool = True,
        extra_parameters: Iterable[nn.Parameter] = (), hooks: Iterable[Any] = ()) -> nn.Module:
    """Train ``model`` in place on (inputs, target) or unlabeled input batches and return it in eval mode.

    With ``evaluate`` (model -> task metric), shows the metric after each epoch, keeps the best epoch's
    weights and stops after ``config.patience`` epochs without improvement. ``extra_parameters`` train
    alongside the model (e.g. a distillation loss's projections). ``hooks`` (the ``train_hooks`` of the
    earlier techniques' ``Applied``) run around every optimizer step.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from .progress import progress_bar

    if train_data is None:
        raise ModelpressError("This step needs training data, but the task has no train_data.")
    steps_per_epoch = len(train_data) if hasattr(train_data, "__len__") else None
    if steps_per_epoch == 0:
        raise ModelpressError("The training data is empty: give the task at least one training batch.")
    train_data = reseeded(train_data, config.seed)
    params = [p for p in model.parameters() if p.requires_grad] + [p for p in extra_parameters if p.requires_grad]
    if not params:
        raise ModelpressError("The model has no trainable parameters (all frozen, or converted to a form without "
                              "gradients); train before that conversion or unfreeze the layers to train.")
    torch.manual_seed(config.seed)
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    total = max(1, config.epochs * (steps_per_epoch or 1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    sign = 1.0 if higher_is_better else -1.0
    best_score, best_state, stale = -np.inf, None, 0  # best_score is sign * metric (higher is better)
    hooks = tuple(hooks)
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    try:
        with progress_bar(*columns) as progress:
            bar = progress.add_task(description, total=total if steps_per_epoch else None, status="")
            metric = ""
            for epoch in range(config.epochs):
                model.train()
                steps = 0
                for batch in train_data:
                    inputs, target = split_batch(batch)
                    loss = loss_fn(model, to_tensors(inputs), None if target is None else torch.as_tensor(target))
                    if not torch.isfinite(loss):
                        raise ModelpressError(f"Training diverged (loss {loss.item()}) in epoch {epoch + 1}; lower lr.")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    for hook in hooks:
                        if hasattr(hook, "before_step"):
                            hook.before_step(model)
                    opt.step()
                    for hook in hooks:
                        if hasattr(hook, "after_step"):
                            hook.after_step(model)
                    sched.step()
                    steps += 1
                    progress.update(bar, advance=1, status=f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f}{metric}")
                if steps == 0:
                    raise ModelpressError("The training data is empty: give the task at least one training batch.")
                if evaluate is not None:
                    model.eval()
                    raw = float(evaluate(model))
                    metric = f" metric {raw:.4f}"
                    progress.update(bar, status=f"epoch {epoch + 1}/{config.epochs} loss {loss.item():.3f}{metric}")
                    if sign * raw > best_score:
                        best_score, best_state, stale = sign * raw, copy.deepcopy(model.state_dict()), 0
                    else:
                        stale += 1
                        if config.patience is not None and stale >= config.patience:
                            break
    finally:
        torch.set_num_threads(threads_before)
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def task_evaluator(task: Any) -> Callable[[nn.Module], float]:
    """model -> the task's metric on its validation data (for ``fit(evaluate=...)``: early stopping decides
    on validation, never on the test data the score is reported on)."""
    from .evaluate import evaluate, torch_predict

    return lambda model: evaluate(torch_predict(model, task), task, task.val_data)


def train_data_for(task: Any, batch_size: int | None = None, labels: bool = True) -> Iterable:
    """The task's training batches, optionally re-batched or stripped of labels (for unlabeled training)."""
    data = task.train_data
    if data is None:
        raise ModelpressError(f"The task '{task.name}' has no train_data; training steps (finetune, distill) need "
                              f"it. Give the task training batches, or distill on its calibration inputs "
                              f"(distill with data: calib).")
    if batch_size is not None:
        if not hasattr(data, "with_batch_size"):
            raise ModelpressError("batch_size can only be changed for modelpress Batches training data.")
        data = data.with_batch_size(batch_size)
    if not labels and hasattr(data, "inputs_only"):
        data = data.inputs_only()
    return data


def frozen_parameters(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[nn.Parameter]:
    """The trainable parameters include/exclude leave out (root-level parameters train unless include is given)."""
    eligible = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    for pattern in include:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in eligible):
            raise ConfigError(f"include pattern '{pattern}' matches no layer with parameters. Eligible layers: "
                              f"{', '.join(eligible)}.")
    chosen = {n for n in eligible if (not include or any(fnmatch.fnmatchcase(n, p) for p in include))
              and not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    return [p for n, m in model.named_modules() if n not in chosen and (n or include)
            for p in m.parameters(recurse=False) if p.requires_grad]
