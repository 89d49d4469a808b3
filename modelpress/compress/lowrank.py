"""Low-rank factorization: Linear layers split by SVD, convolutions by spatial SVD or Tucker-2.

A layer W (m x n) really becomes two smaller layers of rank r (``Sigma_r^1/2 V_r^T`` then
``U_r Sigma_r^1/2``); a k x k convolution becomes k x 1 then 1 x k (spatial SVD) or 1x1, a small k x k
core, 1x1 (Tucker-2), whichever keeps more of the weight at the chosen cost. Ranks come from a
per-layer energy threshold, a per-layer parameter ratio, or measured sensitivity under one global
parameter budget (the default), rounded to multiples of 8. A layer is factorized only when its
MACs fall to at most ``max_cost_ratio`` of the original (or, with ``cost: measured``, its latency on the
recipe's runtime does). ``refit`` (on by default): the last factor of each split layer is then re-fitted by
least squares to the unsplit layer's output on the calibration inputs (``compress/_refit.py``; no labels),
kept unless the validation score drops (MiniLM with the defaults: cosine to fp32 on the test texts 0.65 ->
0.70; ``benchmarks/real.py``).

In a recipe::

    steps:
      - lowrank: {include: ["blocks.*.ffn.*"], param_ratio: 0.4, recover_epochs: 3}

or in Python: ``model = apply(model, Config(rank_by="energy", energy=0.95), task).model``.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import Applied, Tools
from ..config import check
from ..errors import ConfigError, ModelpressError
from ..task import Task
from ._lowrank_layers import approximation, bases, split
from ._lowrank_scope import calibration_inputs, geometry, select
from ._lowrank_select import Choice, Layer, by_energy, by_param_ratio, by_sensitivity, explicit

SEARCH_SPACE: dict[str, list] = {
    "param_ratio": [0.5, 0.35, 0.25, 0.7],
    "rank_by": ["sensitivity", "param_ratio", "energy"],
    "budget": ["params", "macs"],
    "energy": [0.9, 0.95, 0.8],
    "recover_epochs": [0, 2, 5],
}

MIN_PROBE_SAMPLES = 8  # a sensitivity probe over budget still runs on at least this many inputs
DISTILL_TEMPERATURE = 2.0  # softens teacher and student logits in the recovery loss


@dataclass(frozen=True)
class Config:
    include: tuple[str, ...] = ()  # fnmatch patterns on module names; empty = every eligible layer
    exclude: tuple[str, ...] = ()
    rank_by: Literal["sensitivity", "param_ratio", "energy"] = "sensitivity"
    param_ratio: float = 0.5  # share kept: globally over the selected layers (sensitivity) or per layer
    budget: Literal["params", "macs"] = "params"  # what param_ratio limits under rank_by: sensitivity
    energy: float = 0.9  # share of squared singular values each layer keeps (rank_by: energy)
    rank: int | None = None  # one explicit rank for every selected layer (overrides rank_by)
    ranks: dict[str, int] = field(default_factory=dict)  # explicit ranks by layer name pattern
    rank_multiple: int = 8  # chosen ranks are multiples of this (explicit ranks are used as given)
    conv_method: Literal["auto", "spatial", "tucker2"] = "auto"
    max_cost_ratio: float = 0.8  # factorize only when cost after / before <= this
    cost: Literal["macs", "measured"] = "macs"  # measured: time each layer on the recipe's runtime as well
    measure_batch_size: int = 32
    refit: bool = True  # re-fit each split layer's last factor to the unsplit layer on the calibration inputs
    recover_epochs: int = 0  # fine-tuning after the split (0 = none; a 'distill' step can follow instead)
    recover_lr: float = 5e-4
    recover_distill: float = 0.5  # weight of the KL to the unfactorized model in the recovery loss
    calib_samples: int = 128
    # rank_by sensitivity: seconds the probes may take; over it, each probe runs on fewer calibration inputs
    # (down to MIN_PROBE_SAMPLES), timed on the model first. None: every probe on all calib_samples.
    sensitivity_budget_s: float | None = 120.0

    def __post_init__(self) -> None:
        check(0 < self.param_ratio < 1, f"param_ratio must be in (0, 1) (the share of parameters to keep, "
                                        f"e.g. 0.5), got {self.param_ratio}.")
        check(0 < self.energy <= 1, f"energy must be in (0, 1] (the share of squared singular values each "
                                    f"layer keeps, e.g. 0.9), got {self.energy}.")
        for name, r in ([("rank", self.rank)] if self.rank is not None else []) + [
                (f"ranks['{k}']", v) for k, v in self.ranks.items()]:
            check(r >= 1, f"{name} must be at least 1 (rank 0 would leave only the bias), got {r}.")
        check(self.rank_multiple >= 1, f"rank_multiple must be at least 1, got {self.rank_multiple}.")
        check(0 < self.max_cost_ratio <= 1, f"max_cost_ratio must be in (0, 1], got {self.max_cost_ratio}.")
        check(self.measure_batch_size >= 1, f"measure_batch_size must be at least 1, got {self.measure_batch_size}.")
        check(self.recover_epochs >= 0, f"recover_epochs must be >= 0, got {self.recover_epochs}.")
        check(self.recover_lr > 0, f"recover_lr must be positive, got {self.recover_lr}.")
        check(0 <= self.recover_distill <= 1, f"recover_distill must be in [0, 1], got {self.recover_distill}.")
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}.")
        check(self.sensitivity_budget_s is None or self.sensitivity_budget_s > 0,
              f"sensitivity_budget_s must be positive (seconds), or null for no budget; got {self.sensitivity_budget_s}.")


def apply(model: nn.Module | Applied, config: Config, task: Task, tools: Tools = Tools()) -> Applied:
    """A copy of the model with the chosen layers split into low-rank layers (the input is not modified).
    ``cost: measured`` times each split with ``tools.time_ratio`` (the pipeline's runtime)."""
    prev = Applied.of(model)
    model = copy.deepcopy(prev.model).eval()
    modules = select(model, config)
    if config.recover_epochs and task.train_data is None:
        raise ModelpressError("lowrank recover_epochs needs training data, but the task has none; set "
                              "recover_epochs: 0 (or recover with a later 'distill' step on a task with data).")
    inputs = calibration_inputs(task, config.calib_samples)
    layers = geometry(model, modules, inputs)
    plan, skipped, summary = decide(model, layers, config, inputs)
    skipped.update({n: "not run by the model on the calibration inputs" for n in modules
                    if n not in {layer.name for layer in layers}})
    measured: dict[str, float] = {}
    if config.cost == "measured":
        plan, skipped, measured = keep_measured(layers, plan, skipped, config, tools)
    params_before = count(model)
    teacher = copy.deepcopy(model) if (config.recover_epochs or config.refit) and plan else None
    for name, choice in plan.items():
        replace(model, name, split(model.get_submodule(name), choice.method, choice.ranks))
    refitted: dict[str, Any] = {}
    if config.refit and teacher is not None:
        from . import _refit

        pairs = [(f"{n}.{len(model.get_submodule(n)) - 1}", n, None) for n in plan]
        fit, recovery = _refit.checked(model, teacher, pairs, task, "lowrank: re-fitting the split layers")
        refitted = {"lowrank_refit": fit, "recovery": recovery}
    if config.recover_epochs and teacher is not None:
        fine_tune_from(model, teacher, task, config, prev.train_hooks)
    facts = {"ranks": {n: c.ranks[0] if len(c.ranks) == 1 else list(c.ranks) for n, c in plan.items()},
             "params_before": params_before, "params_after": count(model),
             "lowrank_layers": {n: layer_facts(c, measured.get(n)) for n, c in plan.items()},
             "lowrank_skipped": skipped, **({"lowrank_budget": summary} if summary else {}), **refitted}
    return prev.then(model.eval(), facts=facts)


def decide(model: nn.Module, layers: list[Layer], config: Config, inputs: dict[str, torch.Tensor]
           ) -> tuple[dict[str, Choice], dict[str, str], dict]:
    """The plan (layer -> Choice), the layers left dense with their reasons, and a budget summary."""
    by_name = {layer.name: layer for layer in layers}
    rank_of = {n: r for p, r in config.ranks.items() for n in by_name if fnmatch(n, p)}
    if config.rank is not None:
        rank_of = {n: rank_of.get(n, config.rank) for n in by_name}
    fixed = [by_name[n] for n in rank_of]
    rest = [layer for layer in layers if layer.name not in rank_of]
    plan, skipped = explicit(fixed, rank_of, config.conv_method, config.max_cost_ratio)
    args = (config.rank_multiple, config.conv_method, config.max_cost_ratio)
    summary: dict = {}
    if config.rank_by == "energy":
        more, why = by_energy(rest, config.energy, *args)
    elif config.rank_by == "param_ratio":
        more, why = by_param_ratio(rest, config.param_ratio, *args)
    else:
        more, why, summary = sensitivity_plan(model, rest, config, inputs)
    return {**plan, **more}, {**skipped, **why}, summary


def sensitivity_plan(model: nn.Module, layers: list[Layer], config: Config, inputs: dict[str, torch.Tensor]):
    from ..progress import progress_bar
    from ._lowrank_select import probed
    from .sensitivity import OutputProbe

    probes = sum(len(probed(layer, config.rank_multiple, config.conv_method, config.max_cost_ratio)) for layer in layers)
    started = time.perf_counter()
    probe = OutputProbe(model, [inputs], list(inputs))  # one forward pass: what each probe costs
    inputs, sized = sized_to_budget(inputs, probes, time.perf_counter() - started, config.sensitivity_budget_s)
    if sized["probe_samples"] < sized["calib_samples"]:
        probe = OutputProbe(model, [inputs], list(inputs))  # the reference on the inputs kept
    cache: dict[tuple[str, str], tuple] = {}

    def sensitivity(layer: Layer, method: str, ranks: tuple[int, ...]) -> float:
        """Relative output error (every output) with only this layer approximated (the weight swapped in place)."""
        weight = layer.module.weight
        original = weight.detach().clone()
        key = (layer.name, method)
        if key not in cache:
            cache.clear()  # one layer at a time: keep memory flat
            cache[key] = bases(layer.module, method)
        with torch.no_grad():
            weight.copy_(approximation(layer.module, method, ranks, cache[key]))
            try:
                return probe.error()
            finally:
                weight.copy_(original)

    with progress_bar() as progress:
        bar = progress.add_task("lowrank: layer sensitivity", total=len(layers))
        plan, why, summary = by_sensitivity(layers, config.param_ratio, config.rank_multiple, config.conv_method,
                                            config.max_cost_ratio, sensitivity, config.budget,
                                            lambda: progress.advance(bar))
    return plan, why, {**summary, "sensitivity": sized}


def sized_to_budget(inputs: dict[str, torch.Tensor], probes: int, probe_s: float, budget_s: float | None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The calibration inputs the sensitivity probes run on: all of them when ``probes`` passes of
    ``probe_s`` seconds fit in ``budget_s``, else as many as fit (at least MIN_PROBE_SAMPLES), with what was
    decided as facts."""
    n = len(next(iter(inputs.values())))
    keep = n
    if budget_s is not None and probes * probe_s > budget_s:
        keep = max(min(n, MIN_PROBE_SAMPLES), int(n * budget_s / (probes * probe_s)))
    facts = {"probes": probes, "calib_samples": n, "probe_samples": keep, "budget_s": budget_s,
             "expected_s": round(probes * probe_s * keep / n, 1)}
    return {k: v[:keep] for k, v in inputs.items()}, facts


def keep_measured(layers: list[Layer], plan: dict[str, Choice], skipped: dict[str, str], config: Config,
                  tools: Tools):
    """Keep only the layers whose split runs at most ``max_cost_ratio`` of the original's latency on the
    runtime ``tools.time_ratio`` times on."""
    from ..progress import track

    if tools.time_ratio is None:
        raise ConfigError("lowrank 'cost: measured' times each split on the recipe's runtime, but nothing was given "
                          "to time with: run it through a recipe (modelpress run) or pass "
                          "Tools(time_ratio=...) to lowrank.apply; or use cost: macs.")
    by_name = {layer.name: layer for layer in layers}
    kept, skipped, measured = {}, dict(skipped), {}
    for name, c in track(plan.items(), "lowrank: timing layers", len(plan)):
        layer = by_name[name]
        x = np.random.default_rng(0).standard_normal((config.measure_batch_size, *layer.geometry.in_shape))
        ratio = tools.time_ratio(layer.module, split(layer.module, c.method, c.ranks), x.astype(np.float32))
        measured[name] = round(ratio, 4)
        if ratio <= config.max_cost_ratio:
            kept[name] = c
        else:
            skipped[name] = (f"{c.method} at rank {'x'.join(map(str, c.ranks))} measured {ratio:.2f}x the "
                             f"layer's latency on the runtime at batch {config.measure_batch_size} "
                             f"(factorized only at <= {config.max_cost_ratio:.2f}x)")
    return kept, skipped, measured


# ---- the split, recovery, facts --------------------------------------------------------------------

def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``), before it
    runs: the decompositions, ``rank_by: sensitivity``'s probes (up to MAX_CANDIDATES ranks per method and
    layer, each a forward pass over the calibration inputs, within ``sensitivity_budget_s``), ``cost: measured``'s per-layer timing, the re-fit of
    the split layers and the recovery epochs (with the unfactorized model as a teacher)."""
    from ._lowrank_select import MAX_CANDIDATES

    seconds = 1.0 + profile.params * 1e-6
    if config.rank is None and not config.ranks and config.rank_by == "sensitivity":
        probes = profile.layers * MAX_CANDIDATES * 1.5 * profile.forward_s(config.calib_samples)
        floor = profile.layers * MAX_CANDIDATES * 1.5 * profile.forward_s(MIN_PROBE_SAMPLES)
        budget = config.sensitivity_budget_s
        seconds += probes if budget is None else max(min(probes, budget), floor)
    if config.cost == "measured":
        seconds += profile.layers * 2.0
    if config.refit:
        from ._refit import estimate_s as refit_s

        seconds += refit_s(profile)
    return seconds + 1.5 * profile.epoch_s(config.recover_epochs)


def explain(result: Any) -> list[str]:
    """What the re-fit of the split layers won back (``recovery`` facts)."""
    from ._refit import notes

    return notes(result.facts, "lowrank_refit", "lowrank", "the split")


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fine_tune_from(model: nn.Module, teacher: nn.Module, task: Task, config: Config, hooks: tuple = ()) -> None:
    """Fine-tune the factorized model: (1 - a) * CE + a * T^2 * KL(teacher_T || student_T)."""
    from ..train import TrainConfig, fit

    teacher.eval()
    names = list(task.input_names)
    alpha, t = config.recover_distill, DISTILL_TEMPERATURE

    def loss_fn(student: nn.Module, inputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        args = [inputs[n] for n in names]
        logits = student(*args)
        if target is None and alpha == 0:
            raise ModelpressError("lowrank recovery with recover_distill: 0 needs labelled training batches; "
                                  "set recover_distill above 0 to learn from the unfactorized model instead.")
        weight = 1.0 if target is None else alpha  # unlabeled batches learn from the teacher alone
        loss = 0.0 if target is None else (1 - weight) * nn.functional.cross_entropy(logits, target.long())
        if weight == 0:
            return loss
        with torch.no_grad():
            soft = nn.functional.softmax(teacher(*args) / t, dim=-1)
        kl = nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=-1), soft, reduction="batchmean")
        return loss + weight * t * t * kl

    fit(model, task.train_data, TrainConfig(epochs=config.recover_epochs, lr=config.recover_lr, seed=0),
        loss_fn=loss_fn, description="lowrank: recovery", hooks=hooks)


def layer_facts(c: Choice, measured_ratio: float | None = None) -> dict[str, Any]:
    """Per factorized layer: method, ranks, [before, after] parameters and MACs per sample, and the
    measured single-layer latency ratio when ``cost: measured``."""
    out = {"method": c.method, "ranks": list(c.ranks), "params": [c.params_before, c.params_after],
           "macs": [c.macs_before, c.macs_after]}
    if measured_ratio is not None:
        out["measured_latency_ratio"] = measured_ratio
    return out
