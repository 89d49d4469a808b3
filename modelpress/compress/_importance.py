"""Which channels matter: one score per pruning unit (channel or attention head) of each group.

Criteria (higher score = more important, kept first):

- ``l1`` / ``l2``: magnitude of every weight coupled to the channel across the whole group (the
  producing filter, the consuming columns, the norm scale and bias), summed (l1) or root of the sum
  of squares (l2).
- ``bn_scale``: |gamma| of the group's BatchNorm/LayerNorm layers (Network Slimming); a group with no
  norm layer falls back to l2.
- ``taylor``: first-order Taylor estimate of the loss change when the channel is removed,
  |sum over the group's weights of w * dL/dw| (Molchanov et al. 2019), with gradients summed over a
  few training batches of the task.

Scores are in the group's root coordinates; a flattened conv channel gathers its H*W linear columns.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _surgery
from ._graph import Graph, Group
from ..errors import ConfigError

CRITERIA = ("l2", "l1", "bn_scale", "taylor")
TAYLOR_BATCHES = 8
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


def accumulate_gradients(model: nn.Module, task: Any, batches: int = TAYLOR_BATCHES) -> None:
    """Sum the cross-entropy gradients of ``batches`` training batches into ``param.grad`` (eval mode,
    so BatchNorm statistics are not updated)."""
    if task.train_data is None:
        raise ConfigError("importance 'taylor' needs training batches, but the task has no train_data; "
                          "choose importance 'l2', 'l1' or 'bn_scale'.")
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for i, (inputs, target) in enumerate(task.train_data):
            if i >= batches:
                break
            args = [torch.from_numpy(inputs[n]) for n in task.input_names]
            loss = nn.functional.cross_entropy(model(*args), torch.as_tensor(target).long())
            loss.backward()


def _member_scores(tensors: list[tuple[torch.Tensor, int]], idxs: torch.Tensor, criterion: str) -> torch.Tensor:
    total = torch.zeros(len(idxs), dtype=torch.float64)
    for t, dim in tensors:
        v = t.detach().movedim(dim, 0).index_select(0, idxs).reshape(len(idxs), -1).double()
        if criterion == "l1":
            total += v.abs().sum(1)
        elif criterion in ("l2", "bn_scale"):
            total += v.pow(2).sum(1)
        else:  # taylor: signed first-order term, summed over the group before the absolute value
            if t.grad is None:
                continue
            g = t.grad.detach().movedim(dim, 0).index_select(0, idxs).reshape(len(idxs), -1).double()
            total += (v * g).sum(1)
    return total


def group_scores(group: Group, criterion: str) -> torch.Tensor:
    """One score per unit of ``group`` (float64, length ``group.units``)."""
    if criterion not in CRITERIA:
        raise ConfigError(f"Unknown importance '{criterion}'. Valid: {', '.join(CRITERIA)}.")
    members = group.members
    if criterion == "bn_scale":
        norms = [m for m in members if isinstance(m.obj, NORMS)]
        if not norms:
            criterion = "l2"
        members = norms or members
    root = torch.zeros(group.size, dtype=torch.float64)
    for m in members:
        tensors = _surgery.channel_tensors(m.obj, m.axis)
        if criterion == "bn_scale":
            tensors = tensors[:1]  # gamma only
        scores = _member_scores(tensors, torch.as_tensor(m.idxs, dtype=torch.long), criterion)
        root.index_add_(0, torch.as_tensor(m.root_idxs, dtype=torch.long), scores)
    if criterion in ("l2", "bn_scale"):
        root = root.sqrt()
    elif criterion == "taylor":
        root = root.abs()
    return root.reshape(group.units, group.unit).sum(1)


def scores(graph: Graph, criterion: str) -> list[torch.Tensor]:
    """Unit scores for every prunable group of ``graph``."""
    return [group_scores(g, criterion) for g in graph.groups]
