"""``round_to: auto``: the channel multiple chosen by timing the pruned model on the recipe's runtime.

Before pruning, the plan for the whole ``ratio`` (one round) is made at each multiple in ``CANDIDATES`` (distinct plans only); each
pruned model is timed against the unpruned one with ``Tools.time_ratio`` (the recipe's exporter and
runtime, batch 1, interleaved) and the smallest multiple whose ratio is within ``TOLERANCE`` of the best
is kept. Smaller multiples cut closer to the asked ratio, so among equally fast plans the smallest wins.
Where nothing can be timed (no ``time_ratio``: ``prune.apply`` called outside a pipeline; a model whose
single float input and single output the timer cannot feed) the multiple is ``DEFAULT``. What was chosen,
how, and the timings go to ``facts["prune_round_to"]``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from ...progress import log

CANDIDATES = (1, 8, 16, 32)
# Untimed fallback: on ONNX Runtime (x86, 2 threads) EfficientNet-Lite2 pruned 30% ran at 0.54-0.59x of
# fp32 with 8, 16 or 32 and 1.5-1.7x with 1 (counts off the 8/16 blocks of the NCHWc kernels); 16 suits
# both AVX2 (8) and AVX-512 (16) blocks.
DEFAULT = 16
TOLERANCE = 0.05  # a multiple within 5% of the fastest candidate counts as fast


def resolve(model: nn.Module, config: Any, task: Any, example: tuple[torch.Tensor, ...], time_ratio: Any
            ) -> tuple[Any, dict[str, Any] | None]:
    """``config`` with ``round_to`` a number, and the facts saying how it was chosen (None when it was given)."""
    if config.round_to != "auto":
        return config, None
    value, fact = choose(model, config, task, example, time_ratio)
    return dataclasses.replace(config, round_to=value), fact


def untimeable(model: nn.Module, example: tuple[torch.Tensor, ...], time_ratio: Any) -> str | None:
    """Why the pruned model cannot be timed (None when it can)."""
    if time_ratio is None:
        return "no timer (Tools.time_ratio): prune.apply was called outside a pipeline"
    if len(example) != 1 or not torch.is_floating_point(example[0]):
        return "the model takes other than one float input, which the layer timer cannot feed"
    with torch.no_grad():
        if not isinstance(model(*example), torch.Tensor):
            return "the model returns other than one tensor, which the layer timer cannot time"
    return None


def choose(model: nn.Module, config: Any, task: Any, example: tuple[torch.Tensor, ...], time_ratio: Any
           ) -> tuple[int, dict[str, Any]]:
    """(multiple, facts): timed where possible, else ``DEFAULT``."""
    why = untimeable(model, example, time_ratio)
    if why is not None:
        return DEFAULT, {"value": DEFAULT, "chosen_by": "default", "why": why}
    from .. import _importance
    from .._graph import Graph
    from .channel import cut_checked, plan_round

    start = time.perf_counter()
    graph = Graph(model, example, config.include, config.exclude)
    # which channels go barely matters for speed; taylor's gradients are not worth computing for it
    scores = _importance.scores(graph, "l2" if config.importance == "taylor" else config.importance)
    plans = {m: plan_round(model, graph, scores, config, config.ratio, m, example) for m in CANDIDATES}
    keys = {m: tuple(len(plans[m].get(gi, [])) for gi in range(len(graph.groups))) for m in CANDIDATES}
    if len(set(keys.values())) == 1:
        return 1, {"value": 1, "chosen_by": "every candidate gives the same plan", "candidates": list(CANDIDATES)}
    x = example[0].detach().numpy()
    by_plan: dict[tuple, float] = {}
    for m in CANDIDATES:  # the smallest multiple giving a plan times it
        if keys[m] not in by_plan:
            log.info(f"prune: round_to auto: timing the model pruned with round_to {m}")
            pruned, _, _ = cut_checked(model, graph, plans[m], example)
            by_plan[keys[m]] = float(time_ratio(model, pruned, x))
    timings = {str(m): round(by_plan[keys[m]], 4) for m in CANDIDATES}
    best = min(timings.values())
    value = min(m for m in CANDIDATES if timings[str(m)] <= best * (1 + TOLERANCE))
    seconds = time.perf_counter() - start
    log.info(f"prune: round_to auto chose {value} in {seconds:.0f}s (latency ratio to unpruned, batch 1: "
             f"{', '.join(f'{m}: {r:.2f}' for m, r in timings.items())})")
    return value, {"value": value, "chosen_by": "measurement", "timings": timings, "batch": 1,
                   "tolerance": TOLERANCE, "seconds": round(seconds, 1)}
