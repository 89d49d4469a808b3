"""Recovery fine-tuning on the task's labels, through the shared training loop.

Placed after a compression step (``- finetune: {epochs: 2}``), it trains the compressed model on the
task's training data; the train hooks of earlier steps (pruning masks, weight clusters) run around every
optimizer step, so their structure survives. For recovery from the uncompressed model's outputs use
``distill``.

>>> Config(epochs=2).lr
0.0001
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import Applied, Tools
from ..train import TrainConfig, fit, frozen_parameters, task_evaluator, train_data_for
from ..config import check

SEARCH_SPACE: dict[str, list] = {
    "epochs": [1, 3],
    "lr": [1e-4, 1e-3],
}


@dataclass(frozen=True)
class Config(TrainConfig):
    epochs: int = 1
    lr: float = 1e-4  # recovery starts from trained weights: a small step keeps what they know
    batch_size: int | None = None  # None: the task's batch size
    include: tuple[str, ...] = ()  # layers that train (fnmatch on module names); others stay frozen
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}.")


def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``): its epochs."""
    return 1.0 + profile.epoch_s(config.epochs)


def apply(model: nn.Module | Applied, config: Config, task: Any, tools: Tools = Tools()) -> Applied:
    """Fine-tune a copy of the model on the task's labels; the input model is not modified."""
    prev = Applied.of(model)
    model = copy.deepcopy(prev.model)
    data = train_data_for(task, config.batch_size)
    frozen = frozen_parameters(model, config.include, config.exclude)
    evaluate = task_evaluator(task) if config.patience is not None else None
    try:
        for p in frozen:
            p.requires_grad_(False)
        fit(model, data, config.train_config(), evaluate=evaluate, description="fine-tuning",
            higher_is_better=task.higher_is_better, hooks=prev.train_hooks)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return prev.then(model, facts={"finetune": {"epochs": config.epochs, "lr": config.lr,
                                                "trained_layers": "all" if not frozen else "include/exclude"}})
