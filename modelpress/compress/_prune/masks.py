"""Unstructured and N:M masks on the weights of convolution and linear layers.

A mask is a bool tensor shaped like the weight (True = kept). Masks are keyed by parameter name
("features.0.weight"); :class:`MaskHook` re-applies them after every optimizer step of the shared
training loop, so pruned weights stay exactly zero while later steps train.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._graph import check_include, matches

Masks = dict[str, torch.Tensor]


def eligible_layers(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...]) -> list[str]:
    """Names of the convolution and linear layers to prune (include/exclude applied)."""
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    check_include(include, names)
    return [n for n in names if (not include or matches(n, include)) and not matches(n, exclude)]


def _threshold(magnitudes: torch.Tensor, ratio: float) -> float | None:
    """theta such that zeroing |w| <= theta removes the share ``ratio`` (None: remove nothing)."""
    k = int(magnitudes.numel() * ratio + 0.5)
    if k == 0:
        return None
    return float(torch.kthvalue(magnitudes.flatten().float(), k).values)


def magnitude(model: nn.Module, layers: list[str], ratio: float, scope: str) -> Masks:
    """Keep weights with |w| above a threshold set per layer, or one threshold for all (``global``)."""
    weights = {f"{n}.weight": model.get_submodule(n).weight.detach() for n in layers}
    if scope == "global" and weights:
        theta = _threshold(torch.cat([w.abs().flatten() for w in weights.values()]), ratio)
        return {k: (w.abs() > theta) if theta is not None else torch.ones_like(w, dtype=torch.bool)
                for k, w in weights.items()}
    masks = {}
    for k, w in weights.items():
        theta = _threshold(w.abs(), ratio)
        masks[k] = (w.abs() > theta) if theta is not None else torch.ones_like(w, dtype=torch.bool)
    return masks


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| in every run of ``m`` consecutive input channels (per output row and
    kernel position): the layout sparse tensor cores consume."""
    moved = w.movedim(1, -1) if w.dim() > 2 else w  # [out, *kernel, in]
    groups = moved.abs().reshape(-1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups, n, dim=1).indices, True)
    keep = keep.reshape(moved.shape)
    return keep.movedim(-1, 1) if w.dim() > 2 else keep


def n_m(model: nn.Module, layers: list[str], n: int, m: int) -> tuple[Masks, list[str]]:
    """N:M masks for the layers whose input channels split into runs of ``m``; returns the masks and
    the layers skipped (input channels per group not a multiple of ``m``, e.g. depthwise convolutions)."""
    masks, skipped = {}, []
    for name in layers:
        w = model.get_submodule(name).weight.detach()
        if w.shape[1] % m:
            skipped.append(name)
            continue
        masks[f"{name}.weight"] = _nm_mask(w, n, m)
    return masks, skipped


def apply(model: nn.Module, masks: Masks) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            model.get_parameter(name).mul_(mask)


class MaskHook:
    """Train hook: re-zero pruned weights after each optimizer step (weights found by name)."""

    def __init__(self, masks: Masks):
        self.masks = dict(masks)

    def update(self, masks: Masks) -> None:
        for name, mask in masks.items():
            self.masks[name] = mask if name not in self.masks else self.masks[name] & mask

    def after_step(self, model: Any) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                param = model.get_parameter(name)
                if param.shape == mask.shape:  # a later structured cut reshaped the layer: mask no longer applies
                    param.mul_(mask)
