"""Smaller students derived from a model: narrower CNNs and MLPs, shallower transformers.

Width: every convolution and hidden linear layer keeps ``width`` of its output channels; the coupled
layers (BatchNorm, the next layer's inputs, residual additions, depthwise groups, flatten into linear)
follow through Torch-Pruning's dependency graph. The output layer keeps its width, so the student's
outputs have the teacher's shape. Depth: of the longest stack of identical blocks (a transformer's
layers), ``depth`` of the blocks are kept, evenly spaced. With ``init="teacher"`` the student starts
from the teacher's strongest channels (L2 norm) or its kept blocks; with ``"random"`` it is re-initialized.

>>> from modelpress.zoo import LeNet5
>>> s = derive(LeNet5(), torch.zeros(1, 1, 28, 28), shrink="width", width=0.5)
>>> s.features[0].out_channels, s.features[3].out_channels, s.classifier[1].out_features
(10, 25, 250)
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, ModelpressError


def block_stack(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The longest ``nn.Sequential``/``nn.ModuleList`` of >= 2 children of one class (a model's layer stack)."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) >= 2:
            kinds = {type(child) for child in module}
            has_params = all(any(True for _ in child.parameters()) for child in module)
            if len(kinds) == 1 and has_params and (best is None or len(module) > len(best[1])):
                best = (name, module)
    return best


def has_attention(module: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower()
               for m in module.modules())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def output_layer(model: nn.Module, example: Any) -> nn.Module | None:
    """The last Linear or convolution run by ``model`` on ``example`` (its output layer)."""
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    try:
        with torch.no_grad():
            model.eval()(*example)
    finally:
        for h in handles:
            h.remove()
    return order[-1] if order else None


def narrower(model: nn.Module, example: tuple[torch.Tensor, ...], width: float) -> nn.Module:
    """A copy of ``model`` keeping ``width`` of the channels of every layer but the output layer."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ModelpressError("Deriving a narrower student needs Torch-Pruning: pip install 'modelpress[prune]' "
                              "(or give your own student model).") from None
    if has_attention(model):
        raise ConfigError("A narrower student of an attention model is not supported (its heads would need "
                          "reshaping); use shrink: depth to keep fewer transformer blocks.")
    student = copy.deepcopy(model).eval()
    head = output_layer(student, example)
    try:
        pruner = tp.pruner.MetaPruner(student, example if len(example) > 1 else example[0],
                                      importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=1.0 - width, ignored_layers=[head] if head is not None else [])
        pruner.step()
    except Exception as e:  # the graph library names the op it cannot follow
        raise ModelpressError(f"Cannot derive a narrower student of {type(model).__name__}: {str(e)[:300]}. "
                              f"Give your own student model instead.") from None
    return student


def shallower(model: nn.Module, depth: float) -> nn.Module:
    """A copy of ``model`` whose block stack keeps ``depth`` of its blocks, evenly spaced (first one kept)."""
    found = block_stack(model)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no stack of repeated blocks to make shallower; "
                          f"use shrink: width.")
    name, stack = found
    keep = max(1, int(round(len(stack) * depth)))
    if keep >= len(stack):
        raise ConfigError(f"depth {depth} keeps all {len(stack)} blocks of '{name}'; choose a depth below "
                          f"{(len(stack) - 0.5) / len(stack):.2f} for a smaller student.")
    index = sorted({int(i) for i in np.round(np.linspace(0, len(stack) - 1, keep))})
    student = copy.deepcopy(model)
    blocks = [copy.deepcopy(stack[i]) for i in index]
    new = nn.Sequential(*blocks) if isinstance(stack, nn.Sequential) else nn.ModuleList(blocks)
    parent_name, _, attr = name.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    setattr(parent, attr, new)
    return student


def reinitialize(model: nn.Module) -> nn.Module:
    """Reset every layer that can reset itself (random init of the same architecture)."""
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()
    return model


def derive(model: nn.Module, example: tuple[torch.Tensor, ...] | torch.Tensor, shrink: str = "auto",
           width: float = 0.5, depth: float = 0.5, init: str = "teacher", seed: int = 0) -> nn.Module:
    """A smaller student of ``model`` (never modified); ``shrink`` is auto, width or depth.

    ``auto`` makes attention models (a stack of blocks with attention) shallower and others narrower.
    """
    example = example if isinstance(example, tuple) else (example,)
    if shrink == "auto":
        found = block_stack(model)
        shrink = "depth" if found is not None and has_attention(found[1]) else "width"
    student = narrower(model, example, width) if shrink == "width" else shallower(model, depth)
    if init == "random":
        torch.manual_seed(seed)
        reinitialize(student)
    return student.eval()
