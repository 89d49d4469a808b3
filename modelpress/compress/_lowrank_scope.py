"""Low-rank scope: which layers a lowrank step may split (include/exclude patterns, with clear errors
for layers that cannot be factorized) and their shapes on real calibration inputs."""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelpressError
from ..task import Task
from ._lowrank_cost import Geometry
from ._lowrank_layers import spec_of
from ._lowrank_select import Layer


def select(model: nn.Module, config: Any) -> dict[str, nn.Module]:
    """The eligible layers the include/exclude patterns select; a pattern (or a ``ranks`` key) that
    matches no eligible layer is a ConfigError naming why and the eligible layers."""
    all_named = [(n, m) for n, m in model.named_modules() if n]
    blocked = {n for n, m in all_named if isinstance(m, nn.MultiheadAttention)}  # reads its weights directly
    eligible = {n: m for n, m in all_named
                if not isinstance(spec_of(m), str) and n.rpartition(".")[0] not in blocked}

    def matched(pattern: str, where: str) -> list[str]:
        hits = [n for n in eligible if fnmatch(n, pattern)]
        if not hits:
            raise ConfigError(f"lowrank {where} '{pattern}' matches no layer that can be factorized. "
                              f"{_why_not(all_named, pattern, blocked)}Eligible layers: {', '.join(eligible)}.")
        return hits

    chosen = [n for p in config.include for n in matched(p, "include pattern")] if config.include else list(eligible)
    chosen = [n for n in dict.fromkeys(chosen) if not any(fnmatch(n, p) for p in config.exclude)]
    for pattern in config.ranks:
        if not set(matched(pattern, "ranks key")) & set(chosen):
            raise ConfigError(f"lowrank ranks key '{pattern}' names only layers left out by include/exclude; "
                              f"include them or remove the key.")
    return {n: eligible[n] for n in chosen}


def _why_not(named: list[tuple[str, nn.Module]], pattern: str, blocked: set[str]) -> str:
    reasons = []
    for n, m in named:
        if fnmatch(n, pattern):
            why = spec_of(m)
            if n.rpartition(".")[0] in blocked:
                why = "it belongs to an nn.MultiheadAttention, which reads its weights directly"
            if not isinstance(why, str):
                continue
            if len(m._modules):
                why += f" (patterns match layer names: try '{n}.*')"
            reasons.append(f"'{n}' cannot be factorized: {why}.")
    return " ".join(reasons[:3]) + (" " if reasons else "")


def calibration_inputs(task: Task, samples: int) -> dict[str, torch.Tensor]:
    """Up to ``samples`` calibration inputs, keyed (and ordered) by the task's input names."""
    taken: dict[str, list[np.ndarray]] = {}
    total = 0
    for batch in task.calib_data or ():
        batch = batch[0] if isinstance(batch, tuple) else batch
        for k, v in batch.items():
            taken.setdefault(k, []).append(np.asarray(v))
        total += len(next(iter(batch.values())))
        if total >= samples:
            break
    if not taken:
        raise ModelpressError("lowrank needs calibration inputs to measure layer shapes, but the task's "
                              "calib_data is empty; give the task some calibration batches.")
    names = [n for n in task.input_names if n in taken] or list(taken)
    return {k: torch.from_numpy(np.ascontiguousarray(np.concatenate(taken[k])[:samples])) for k in names}


def run(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's first output on ``inputs`` (positional, in the task's input order)."""
    with torch.no_grad():
        out = model(*inputs.values())
    return out[0] if isinstance(out, (tuple, list)) else out


def geometry(model: nn.Module, modules: dict[str, nn.Module], inputs: dict[str, torch.Tensor]) -> list[Layer]:
    """Each selected layer with its per-sample input/output shapes from one forward pass."""
    shapes: dict[str, tuple] = {}

    def hook(name: str):
        def keep(module: nn.Module, args: tuple, out: torch.Tensor) -> None:  # None: the output is unchanged
            shapes.setdefault(name, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
        return keep

    hooks = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        run(model, {k: v[:2] for k, v in inputs.items()})
    finally:
        for h in hooks:
            h.remove()
    return [Layer(n, m, Geometry(spec_of(m), *shapes[n], m.bias is not None)) for n, m in modules.items() if n in shapes]
