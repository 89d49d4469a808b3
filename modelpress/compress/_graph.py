"""Which channels are coupled: groups of (layer, axis) that must lose the same channels together.

Built on Torch-Pruning's dependency graph (``torch_pruning.DependencyGraph``), which traces the model
through autograd and propagates a channel cut across residual additions, concatenations (with index
offsets), depthwise convolutions, BatchNorm/LayerNorm, flatten-into-linear (one conv channel = H*W
linear inputs) and the q/k/v/o projections of attention. This module turns its groups into plain
:class:`Group` records and adds what modelpress needs on top:

- groups that reach the model output are never pruned (the output shape is the task's contract);
- ``include`` / ``exclude`` patterns (a layer is matched by its own name or any ancestor's);
- attention heads: a group holding the projections of an attention module (:data:`HEAD_LAYOUTS`: an int
  ``num_heads`` as in ``modelpress.zoo.Attention``, or ``num_attention_heads`` and ``attention_head_size``
  as in Hugging Face's BERT family) is pruned in whole heads (unit = head size channels): the same heads
  leave query, key, value and the output projection's inputs, and the module's head count (and
  ``all_head_size``) is updated;
- a group holding a layer the mechanics cannot cut is left whole, with the reason (``skipped``: group root ->
  the layer, its type and why).

Coordinates: every group has *root* coordinates (the channels of its first layer's output); each
member lists its own indices and, for each, the root channel it belongs to (a flattened conv channel
maps to H*W linear inputs; a concat member is offset).
"""
from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import _surgery
from ..errors import ConfigError, ModelpressError

ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
WEIGHT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.Embedding)
# Attention modules pruned in whole heads: (head count attribute, head size attribute, attributes holding
# heads * head size). A module matches by the first whose head count is an int.
HEAD_LAYOUTS = (
    ("num_heads", "head_dim", ()),  # modelpress.zoo.Attention and the like (head size optional)
    ("num_attention_heads", "attention_head_size", ("all_head_size",)),  # Hugging Face BERT, RoBERTa, MiniLM, ...
)


@dataclass(frozen=True)
class Heads:
    """How an attention module stores its head count and size (see :data:`HEAD_LAYOUTS`)."""
    count_attr: str
    count: int
    head_size: int | None
    total_attrs: tuple[str, ...]

    def settings(self, kept_heads: int) -> dict[str, int]:
        """The attribute values after keeping ``kept_heads`` heads (the record's "set" entry)."""
        out = {self.count_attr: kept_heads}
        out.update({a: kept_heads * self.head_size for a in self.total_attrs if self.head_size})
        return out


def heads_of(module: nn.Module) -> Heads | None:
    """The head layout of an attention module whose projections can lose whole heads, or None."""
    if isinstance(module, nn.MultiheadAttention):  # fused in_proj: the mechanics cannot cut it
        return None
    for count_attr, size_attr, total_attrs in HEAD_LAYOUTS:
        count = getattr(module, count_attr, None)
        if isinstance(count, int) and not isinstance(count, bool):
            size = getattr(module, size_attr, None)
            return Heads(count_attr, count, size if isinstance(size, int) else None, total_attrs)
    return None


@dataclass
class Member:
    name: str                # module name, or parameter name for a bare nn.Parameter
    axis: Any                # "out", "in", or the parameter's dimension
    obj: Any                 # the nn.Module or nn.Parameter
    idxs: list[int]          # coupled indices in this member's coordinates
    root_idxs: list[int]     # root channel of each index


@dataclass
class Group:
    root: str
    size: int                                   # channels, in root coordinates
    members: list[Member] = field(default_factory=list)
    unit: int = 1                               # channels per pruning unit (head_dim for head groups)
    heads_of: str | None = None                 # attention module whose heads this group holds
    tp_root: Any = None                         # (module, pruning function) to re-derive index mappings

    @property
    def units(self) -> int:
        return self.size // self.unit

    def describe(self) -> str:
        what = f"{self.units} heads of '{self.heads_of}'" if self.heads_of else f"{self.size} channels"
        return f"{what} rooted at '{self.root}'"


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """True when ``name`` or one of its ancestors ('a.b' for 'a.b.c') matches a pattern."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[:i]), p) for i in range(1, len(parts) + 1) for p in patterns)


def check_include(include: tuple[str, ...], eligible: list[str]) -> None:
    """An include pattern that matches no eligible layer (or ancestor of one) is a ConfigError."""
    for pattern in include:
        if not any(matches(name, (pattern,)) for name in eligible):
            raise ConfigError(
                f"include pattern '{pattern}' matches no prunable layer. Prunable layers: "
                f"{', '.join(eligible) or '(none)'}.")


class Graph:
    """The prunable channel groups of ``model``, traced on ``example_inputs`` (a tuple of tensors)."""

    def __init__(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
        try:
            import torch_pruning as tp
        except ImportError:
            raise ModelpressError("Structured pruning needs Torch-Pruning's dependency graph: install it with "
                                  "\"pip install 'modelpress[prune]'\" (torch-pruning), or use method 'magnitude'.") from None
        self.model = model
        was_training = model.training
        try:
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                self.dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
                raw = list(self.dg.get_all_groups(root_module_types=ROOT_TYPES))
        except Exception as e:
            raise ModelpressError(
                f"The dependency graph could not trace the model ({type(e).__name__}: {str(e)[:200]}). "
                f"Structured pruning needs a model whose forward pass runs on the task's example inputs "
                f"with autograd; use method 'magnitude' instead.") from None
        finally:
            model.train(was_training)
        self._dummy = tuple(getattr(tp.ops, n) for n in dir(tp.ops) if n.startswith("_") and n.endswith("Op"))
        self.groups: list[Group] = []
        self.skipped: dict[str, str] = {}  # group root -> why its channels are left whole
        candidates = [g for g in (self._convert(r) for r in raw) if g is not None]
        self.eligible: list[str] = sorted({m.name for g in candidates for m in g.members if isinstance(m.obj, WEIGHT_TYPES)})
        check_include(include, self.eligible)
        for group in candidates:
            names = [m.name for m in group.members]
            if exclude and any(matches(n, exclude) for n in names):
                continue
            if include and not any(matches(m.name, include) for m in group.members
                                   if m.axis == "out" and isinstance(m.obj, WEIGHT_TYPES)):
                continue
            reason = self._unsupported(group)
            if reason:
                self.skipped[group.root] = reason
                continue
            self._detect_heads(group)
            self.groups.append(group)
        self._split_heads()

    def _name(self, obj: Any) -> str:
        if isinstance(obj, nn.Parameter):
            return self.dg._param_to_name[obj]
        return self.dg._module2name[obj]

    def _convert(self, tp_group: Any) -> Group | None:
        """A Torch-Pruning group as a Group; None when it reaches the model output."""
        members: dict[tuple[str, Any], Member] = {}
        for item in tp_group:
            node = item.dep.target
            obj = node.module
            dummy = isinstance(obj, self._dummy) or not isinstance(obj, (nn.Module, nn.Parameter))
            if (not node.outputs and (dummy or self._axis(item) != "in")) or type(obj).__name__ == "_OutputOp":
                return None  # the channels reach a sink of the traced graph: they are the model's output
            if dummy:
                continue
            key = (self._name(obj), self._axis(item))
            if key in members:  # the same channels reached twice (e.g. depthwise in and out)
                continue
            members[key] = Member(key[0], key[1], obj, list(item.idxs), list(item.root_idxs))
        first = tp_group[0]
        return Group(root=self._name(first.dep.target.module), size=len(first.idxs), members=list(members.values()),
                     tp_root=(first.dep.target.module, first.dep.handler))

    def _axis(self, item: Any) -> Any:
        """The member axis a Torch-Pruning group item cuts."""
        obj = item.dep.target.module
        if isinstance(obj, nn.Parameter):
            return item.dep.target.pruning_dim
        if _surgery.is_depthwise(obj) or self.dg.is_out_channel_pruning_fn(item.dep.handler):
            return "out"
        return "in"

    def _unsupported(self, group: Group) -> str | None:
        """Why the group must be left whole (a member the mechanics cannot cut), or None."""
        for m in group.members:
            reason = _surgery.why_unsupported(m.obj, m.axis)
            if reason:
                return (f"left whole: its channels are coupled with layer '{m.name}' ({type(m.obj).__name__}), which "
                        f"structured pruning cannot cut ({reason}); exclude: ['{m.name}'] says so in the recipe")
        return None

    def _detect_heads(self, group: Group) -> None:
        """Mark a group of attention projections: two or more output members (query, key, value) whose parent
        module has a head layout (:func:`heads_of`). One output member under such a module (the output
        projection, whose outputs are the residual stream) does not make a head group. Torch-Pruning couples
        query, key, value and the output projection's inputs into one group through the attention matmuls,
        so removing whole heads of the root removes the same heads from all four."""
        parents = [m.name.rpartition(".")[0] for m in group.members if m.axis == "out"]
        for parent_name in dict.fromkeys(p for p in parents if p and parents.count(p) >= 2):
            heads = heads_of(self.model.get_submodule(parent_name))
            if heads is None:
                continue
            head_size = heads.head_size or group.size // heads.count
            if heads.count * head_size != group.size:
                raise ConfigError(
                    f"'{parent_name}' has {heads.count_attr}={heads.count} heads of {head_size} channels, but its "
                    f"projections carry {group.size} coupled channels, so whole heads cannot be cut. Leave it out "
                    f"with exclude: ['{parent_name}'].")
            group.unit, group.heads_of = head_size, parent_name
            return

    def _split_heads(self) -> None:
        """Leave whole the head groups of an attention module whose projections fall in several groups: each
        group would lose its own heads (or single channels), pairing one head's queries with another's values.
        A projection of module M is an output member under M of another group, unless it is an input member
        of M's head group (the output projection, whose outputs are the residual stream)."""
        for head in [g for g in self.groups if g.heads_of]:
            inputs = {m.name for m in head.members if m.axis == "in"}
            split = [g for g in self.groups if g is not head and any(
                m.axis == "out" and m.name.rpartition(".")[0] == head.heads_of and m.name not in inputs for m in g.members)]
            if not split:
                continue
            for g in [head, *split]:
                if g in self.groups:
                    self.groups.remove(g)
                    self.skipped[g.root] = (
                        f"left whole: the projections of '{head.heads_of}' fall in {len(split) + 1} groups of coupled "
                        f"channels, so the same heads cannot be removed from query, key and value; "
                        f"exclude: ['{head.heads_of}'] says so in the recipe")

    def cuts(self, removed: dict[int, list[int]]) -> list[dict[str, Any]]:
        """The pruning record for removing root channels ``removed[group index]`` from the groups."""
        pruned: dict[tuple[str, Any], set[int]] = {}
        objs: dict[tuple[str, Any], Any] = {}
        sets = []
        for gi, idxs in removed.items():
            if not idxs:
                continue
            group = self.groups[gi]
            module, fn = group.tp_root
            for item in self.dg.get_pruning_group(module, fn, sorted(idxs)):
                obj = item.dep.target.module
                if isinstance(obj, self._dummy) or not isinstance(obj, (nn.Module, nn.Parameter)):
                    continue
                key = (self._name(obj), self._axis(item))
                pruned.setdefault(key, set()).update(int(i) for i in item.idxs)
                objs[key] = obj
            if group.heads_of:
                heads = heads_of(self.model.get_submodule(group.heads_of))
                sets.append({"layer": group.heads_of, "set": heads.settings(heads.count - len(idxs) // group.unit)})
        record = []
        for (name, axis), gone in pruned.items():
            n = _surgery.size(objs[(name, axis)], axis)
            kept = [i for i in range(n) if i not in gone]
            if not kept:
                raise ConfigError(f"Pruning would remove every channel of '{name}'; lower the ratio or exclude it.")
            record.append({"layer": name, "axis": axis, "size": n, "kept": kept})
        return record + sets
