"""The one training loop for every technique that trains (and for the built-in reference models).

``fit`` runs AdamW or SGD with a cosine learning-rate schedule and deterministic seeds, shows a
progress bar with the loss, and can stop early on the task metric. A custom ``loss_fn`` lets
distillation train on a teacher's outputs.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import train_hooks
from ..config import check
from ..errors import ModelpressError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9
    seed: int = 0
    patience: int | None = None  # epochs without metric improvement before stopping; None = never

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}.")
        check(self.lr > 0, f"lr must be positive, got {self.lr}.")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        check(self.patience is None or self.patience >= 1, f"patience must be >= 1, got {self.patience}.")


LossFn = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


def to_tensors(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def forward(model: nn.Module, inputs: dict[str, torch.Tensor], input_names: Iterable[str] | None = None) -> Any:
    names = list(input_names) if input_names is not None else list(inputs)
    return model(*[inputs[n] for n in names])


def cross_entropy(model: nn.Module, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(forward(model, inputs), target.long())


def fit(model: nn.Module, train_data: Iterable, config: TrainConfig = TrainConfig(),
        loss_fn: LossFn = cross_entropy, evaluate: Callable[[nn.Module], float] | None = None,
        description: str = "train") -> nn.Module:
    """Train ``model`` in place on (inputs, target) batches and return it in eval mode.

    With ``evaluate`` (model -> score, higher is better), keeps the best epoch's weights and stops
    after ``config.patience`` epochs without improvement.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if train_data is None:
        raise ModelpressError("This step needs training data, but the task has no train_data.")
    steps_per_epoch = len(train_data) if hasattr(train_data, "__len__") else None
    if steps_per_epoch == 0:
        raise ModelpressError("The training data is empty: give the task at least one training batch.")
    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    total = max(1, config.epochs * (steps_per_epoch or 1))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, total) / total)))
    best_score, best_state, stale = -np.inf, None, 0
    hooks = train_hooks(model)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task(description, total=total, status="")
        for epoch in range(config.epochs):
            model.train()
            for inputs, target in train_data:
                loss = loss_fn(model, to_tensors(inputs), torch.as_tensor(target))
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
                progress.update(bar, advance=1, status=f"epoch {epoch + 1} loss {loss.item():.3f}")
            if evaluate is not None:
                model.eval()
                score = evaluate(model)
                if score > best_score:
                    best_score, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
                else:
                    stale += 1
                    if config.patience is not None and stale >= config.patience:
                        break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()
