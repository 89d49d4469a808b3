"""Structured-pruning mechanics: how each layer type is cut along one channel axis.

A *cut* is plain data, ``{"layer": name, "axis": "out" | "in" | int, "size": n, "kept": [indices]}``:
keep the channels ``kept`` (ascending indices into the layer's current ``size`` channels) of the
layer's output (``"out"``) or input (``"in"``) channels, or of dimension ``axis`` of a bare
``nn.Parameter`` named ``layer``. A *set* is ``{"layer": name, "set": {attribute: value}}`` (e.g. the
head count of an attention module). Pruning and rebuilding a pruned model from its record both go
through :func:`apply_cuts`, so the record is complete by construction.

This module decides nothing (that is the policy) and knows no graph (that is ``_graph``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ModelpressError

Axis = Any  # "out", "in", or an int dimension for a bare parameter

# Per layer type: (tensor attribute, dimension holding the channel) for each axis, and the int
# attributes that hold the channel count. Depthwise convolutions are handled in `layout`.
_LAYOUT: list[tuple[type, dict[str, list[tuple[str, int]]], dict[str, tuple[str, ...]]]] = [
    (nn.Linear, {"out": [("weight", 0), ("bias", 0)], "in": [("weight", 1)]},
     {"out": ("out_features",), "in": ("in_features",)}),
    (nn.modules.batchnorm._BatchNorm, {"out": [("weight", 0), ("bias", 0), ("running_mean", 0), ("running_var", 0)]},
     {"out": ("num_features",)}),
    (nn.LayerNorm, {"out": [("weight", 0), ("bias", 0)]}, {"out": ()}),
    (nn.PReLU, {"out": [("weight", 0)]}, {"out": ("num_parameters",)}),
    (nn.Embedding, {"out": [("weight", 1)]}, {"out": ("embedding_dim",)}),
]


def is_depthwise(module: nn.Module) -> bool:
    """A convolution with one filter per input channel (groups == in_channels == out_channels > 1)."""
    return (isinstance(module, nn.modules.conv._ConvNd) and not module.transposed
            and module.groups == module.in_channels == module.out_channels and module.groups > 1)


def why_unsupported(module: Any, axis: Axis) -> str | None:
    """Why this layer cannot be cut along ``axis`` (None when it can)."""
    if isinstance(module, nn.Parameter):
        return None if isinstance(axis, int) and 0 <= axis < module.dim() else f"no dimension {axis}"
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            return "transposed convolutions are not supported"
        if module.groups != 1 and not is_depthwise(module):
            return f"grouped convolution (groups={module.groups}) other than depthwise"
        return None
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return f"LayerNorm over {len(module.normalized_shape)} dimensions"
    if isinstance(module, nn.PReLU) and module.num_parameters == 1:
        return None
    for cls, tensors, _ in _LAYOUT:
        if isinstance(module, cls):
            axis = "out" if len(tensors) == 1 else axis
            return None if axis in tensors else f"no '{axis}' channel axis"
    return f"{type(module).__name__} layers are not supported"


def layout(module: nn.Module, axis: Axis) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(tensor attribute, channel dimension) pairs and count attributes for ``axis`` of ``module``."""
    reason = why_unsupported(module, axis)
    if reason:
        raise ModelpressError(f"Cannot cut a {type(module).__name__} along '{axis}': {reason}.")
    if isinstance(module, nn.modules.conv._ConvNd):
        if is_depthwise(module):  # one filter per channel: input and output channels are the same axis
            return [("weight", 0), ("bias", 0)], ("out_channels", "in_channels", "groups")
        if axis == "out":
            return [("weight", 0), ("bias", 0)], ("out_channels",)
        return [("weight", 1)], ("in_channels",)
    if isinstance(module, nn.PReLU) and module.num_parameters == 1:
        return [], ()  # one shared slope: nothing to cut
    for cls, tensors, counts in _LAYOUT:
        if isinstance(module, cls):
            key = "out" if len(tensors) == 1 else axis  # norms: input and output channels coincide
            return tensors[key], counts[key]
    raise AssertionError("unreachable: why_unsupported accepted the layer")


def channel_tensors(module: Any, axis: Axis) -> list[tuple[torch.Tensor, int]]:
    """The learned tensors of ``module`` that carry ``axis``, each with its channel dimension
    (running statistics excluded)."""
    if isinstance(module, nn.Parameter):
        return [(module, axis)]
    tensors, _ = layout(module, axis)
    out = []
    for name, dim in tensors:
        t = getattr(module, name, None)
        if isinstance(t, torch.Tensor) and not name.startswith("running_"):
            out.append((t, dim))
    return out


def size(module: Any, axis: Axis) -> int:
    """Number of channels of ``module`` along ``axis``."""
    if isinstance(module, nn.Parameter):
        return module.shape[axis]
    tensors, counts = layout(module, axis)
    if counts:
        return int(getattr(module, counts[0]))
    name, dim = tensors[0]
    return getattr(module, name).shape[dim]


def _cut_module(module: nn.Module, axis: Axis, kept: torch.Tensor) -> None:
    tensors, counts = layout(module, axis)
    for name, dim in tensors:
        old = getattr(module, name, None)
        if not isinstance(old, torch.Tensor):
            continue
        new = old.detach().index_select(dim, kept).clone()
        if isinstance(old, nn.Parameter):
            setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            setattr(module, name, new)  # a registered buffer keeps its registration
    for attr in counts:
        setattr(module, attr, len(kept))
    if isinstance(module, nn.LayerNorm):
        module.normalized_shape = (len(kept),)


def resolve(model: nn.Module, name: str) -> tuple[nn.Module, str, Any]:
    """(parent module, attribute name, object) for a dotted module or parameter name."""
    parent, _, attr = name.rpartition(".")
    try:
        owner = model.get_submodule(parent) if parent else model
        obj = getattr(owner, attr)
    except AttributeError:
        raise ModelpressError(
            f"The pruning record names '{name}', which this model does not have: rebuild from the same "
            f"original model the record was made from.") from None
    return owner, attr, obj


def apply_cuts(model: nn.Module, record: Iterable[dict[str, Any]]) -> nn.Module:
    """Apply a pruning record to ``model`` in place (cuts and attribute sets, in order)."""
    for entry in record:
        owner, attr, obj = resolve(model, entry["layer"])
        if "set" in entry:
            for key, value in entry["set"].items():
                setattr(obj, key, value)
            continue
        axis, kept = entry["axis"], torch.as_tensor(entry["kept"], dtype=torch.long)
        current = size(obj, axis)
        if current != entry["size"]:
            raise ModelpressError(
                f"The pruning record expects '{entry['layer']}' to have {entry['size']} channels along "
                f"'{axis}', but it has {current}: the record belongs to a different model.")
        if len(kept) == 0 or int(kept.min()) < 0 or int(kept.max()) >= current:
            raise ModelpressError(f"The pruning record for '{entry['layer']}' keeps invalid channels.")
        if isinstance(obj, nn.Parameter):
            new = obj.detach().index_select(axis, kept).clone()
            setattr(owner, attr, nn.Parameter(new, requires_grad=obj.requires_grad))
        else:
            _cut_module(obj, axis, kept)
    return model
