"""Channel pruning, round by round: build the dependency graph, score, plan, cut, check that the model
still runs, fold the round's cuts into one record.

A group that cannot be cut is left whole and listed with its reason (``prune_skipped``): the graph refuses
groups holding a layer the mechanics cannot cut, and a group whose cut breaks the model (an operation
coupling its channels that the dependency graph does not see) is found by cutting it alone and dropped
from the round.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import ModelpressError

RECORD_VERSION = 1


def schedule(ratio: float, step: int, steps: int) -> float:
    """Cumulative share removed after round ``step`` of ``steps`` (cubic: most in the early rounds)."""
    return ratio * (1 - (1 - step / steps) ** 3)


def prune_channels(model: nn.Module, config: Any, task: Any, example: tuple[torch.Tensor, ...],
                   fine_tune: Callable[[nn.Module, int], None],
                   recover: Callable[[nn.Module, nn.Module, list[dict[str, Any]]], None] | None = None
                   ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The pruned model, its facts and the pruning record (replayable cuts). ``recover(reference, pruned,
    cuts)`` runs after each round's cuts (before its fine-tuning), ``reference`` being the model before them."""
    from .. import _importance
    from .._graph import Graph, heads_of

    composed: dict[tuple[str, Any], dict[str, Any]] = {}
    sets: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    heads_before = {n: h for n, h in ((n, heads_of(m)) for n, m in model.named_modules()) if h is not None}
    for step in range(1, config.steps + 1):
        done, goal = schedule(config.ratio, step - 1, config.steps), schedule(config.ratio, step, config.steps)
        local = 1 - (1 - goal) / (1 - done)  # share of what is left that this round removes
        graph = Graph(model, example, config.include, config.exclude)
        skipped.update(graph.skipped)
        if config.importance == "taylor":
            _importance.accumulate_gradients(model, task)
        scores = _importance.scores(graph, config.importance)
        model.zero_grad(set_to_none=True)

        removed = plan_round(model, graph, scores, config, local, config.round_to, example)
        reference = model
        model, cuts, broken = cut_checked(model, graph, removed, example)
        skipped.update(broken)
        if recover is not None and cuts:
            recover(reference, model, cuts)
        compose(composed, sets, cuts)
        fine_tune(model, step)
    pruning = {"version": RECORD_VERSION, "method": "channel",
               "cuts": list(composed.values()) + [{"layer": k, "set": v} for k, v in sets.items()]}
    summary = {c["layer"]: [c["size"], len(c["kept"])] for c in composed.values() if c["axis"] == "out"}
    summary.update({f"{k} heads": [heads_before[k].count, v[heads_before[k].count_attr]] for k, v in sets.items()})
    facts: dict[str, Any] = {"pruned_channels": summary, "prune_method": "channel"}
    kept_heads = {k: sets.get(k, {}).get(h.count_attr, h.count) for k, h in heads_before.items()}
    if len({h.count for h in heads_before.values()}) == 1 < len(set(kept_heads.values())):
        # equal heads before, unequal after (scope global, exclude): a Hugging Face config has one head count
        facts["prune_heads_uneven"] = kept_heads
    if skipped:
        facts["prune_skipped"] = skipped
    return model, facts, pruning


def plan_round(model: nn.Module, graph: Any, scores: list[torch.Tensor], config: Any, ratio: float, round_to: int,
               example: tuple[torch.Tensor, ...]) -> dict[int, list[int]]:
    """Root channel indices to remove from each group so that the round removes ``ratio`` of what
    ``config.target`` counts (channels; or parameters / MACs, by bisection on the channel ratio)."""
    from .. import _surgery
    from . import counts, policy

    def plan_for(r: float) -> dict[int, list[int]]:
        return policy.plan(graph, scores, r, config.scope, round_to)

    if config.target == "channels":
        return plan_for(ratio)
    cost = counts.params if config.target == "params" else (lambda m: counts.macs(m, example))
    now = cost(model)

    def removed_share(r: float) -> float:
        trial = _surgery.apply_cuts(copy.deepcopy(model), graph.cuts(plan_for(r)))
        return 1 - cost(trial) / now

    return plan_for(policy.solve(removed_share, ratio))


def cut_checked(model: nn.Module, graph: Any, removed: dict[int, list[int]], example: tuple[torch.Tensor, ...]
                ) -> tuple[nn.Module, list[dict[str, Any]], dict[str, str]]:
    """A copy of ``model`` with the planned cuts, checked to run with the same output shape; the cuts made
    and the groups left whole because cutting them broke the model (group root -> reason). A failure that
    no single group explains is an error."""
    from .. import _surgery

    with torch.no_grad():
        expected = model(*example).shape
    cuts = graph.cuts(removed)
    if runs(model, cuts, example, expected):
        return _surgery.apply_cuts(copy.deepcopy(model), cuts), cuts, {}
    broken = [gi for gi, idxs in removed.items() if idxs and not runs(  # cut one unit of each group alone
        model, graph.cuts({gi: list(range(graph.groups[gi].unit))}), example, expected)]
    cuts = graph.cuts({gi: idxs for gi, idxs in removed.items() if gi not in broken})
    if not broken or not runs(model, cuts, example, expected):
        raise ModelpressError(
            "Structured pruning broke the model, and no single group of coupled channels explains it: an "
            "operation coupling channels of several groups is not understood by the dependency graph. Leave "
            "layers out with exclude, or use method 'magnitude'.")
    reasons = {}
    for gi in broken:
        g = graph.groups[gi]
        reasons[g.root] = (f"left whole: cutting {g.describe()} (layers {', '.join(m.name for m in g.members)}) "
                           f"breaks the model, so an operation coupling these channels is not understood by the "
                           f"dependency graph; exclude: ['{g.root}'] says so in the recipe")
    return _surgery.apply_cuts(copy.deepcopy(model), cuts), cuts, reasons


def runs(model: nn.Module, cuts: list[dict[str, Any]], example: tuple[torch.Tensor, ...], expected: Any) -> bool:
    from .. import _surgery

    try:
        with torch.no_grad():
            return _surgery.apply_cuts(copy.deepcopy(model), cuts)(*example).shape == expected
    except Exception:
        return False


def compose(composed: dict, sets: dict, cuts: list[dict[str, Any]]) -> None:
    """Fold a round's cuts (in current coordinates) into the record (in the original model's)."""
    for c in cuts:
        if "set" in c:
            sets.setdefault(c["layer"], {}).update(c["set"])
            continue
        key = (c["layer"], c["axis"])
        if key in composed:
            prev = composed[key]["kept"]
            composed[key]["kept"] = [prev[i] for i in c["kept"]]
        else:
            composed[key] = {"layer": c["layer"], "axis": c["axis"], "size": c["size"], "kept": list(c["kept"])}
