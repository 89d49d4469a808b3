"""Low-rank policy: the rank (and method) of every layer, decided from its spectrum, a parameter budget,
or measured sensitivity, and kept only where the cost falls clearly.

Every decision is a :class:`Choice`; a layer left dense gets a reason instead. Ranks chosen here are
multiples of ``multiple`` (8 by default; fewer only when the layer's own limit is smaller), so the
smaller matrices stay friendly to vectorized kernels. Explicit ranks are used as given.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ._lowrank_cost import Geometry, macs, params
from ._lowrank_layers import spectra

MAX_CANDIDATES = 12  # per method and layer in the sensitivity search


@dataclass(frozen=True)
class Choice:
    method: str
    ranks: tuple[int, ...]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(1, self.macs_before)


@dataclass(frozen=True)
class Layer:
    name: str
    module: nn.Module
    geometry: Geometry

    def choice(self, method: str, ranks: tuple[int, ...]) -> Choice:
        g = self.geometry
        return Choice(method, tuple(int(r) for r in ranks), params(g), params(g, method, ranks), macs(g),
                      macs(g, method, ranks))


def methods(layer: Layer, conv_method: str) -> tuple[str, ...]:
    allowed = layer.geometry.spec.methods
    if conv_method == "auto" or allowed == ("svd",):
        return allowed
    return (conv_method,)


def grid(limit: int, multiple: int) -> list[int]:
    """Ranks a search may use: the multiples of ``multiple`` up to ``limit`` (``[limit]`` when smaller)."""
    return list(range(multiple, limit + 1, multiple)) or [limit]


def round_up(rank: int, multiple: int, limit: int) -> int:
    return min(limit, max(multiple, -(-rank // multiple) * multiple)) if limit >= multiple else limit


def tucker_pairs(layer: Layer, multiple: int) -> list[tuple[int, int]]:
    """(r_in, r_out) pairs along the line proportional to (cin, cout), rounded to the multiple."""
    cin, cout = layer.geometry.spec.cin, layer.geometry.spec.cout
    lead = max(cin, cout)
    pairs = []
    for t in grid(lead, multiple):
        pair = (round_up(round(t * cin / lead), multiple, cin), round_up(round(t * cout / lead), multiple, cout))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def rank_options(layer: Layer, method: str, multiple: int) -> list[tuple[int, ...]]:
    if method == "tucker2":
        return tucker_pairs(layer, multiple)
    return [(r,) for r in grid(layer.geometry.spec.max_ranks(method)[0], multiple)]


def tail_energy(energies: tuple[np.ndarray, ...], method: str, ranks: tuple[int, ...]) -> float:
    """Share of the weight's energy (squared Frobenius norm) the truncation drops; for tucker2 the HOSVD
    bound (sum over both channel modes)."""
    if method == "tucker2":
        (e_out, e_in), (r_in, r_out) = energies, ranks
        return float(e_out[r_out:].sum() / e_out.sum() + e_in[r_in:].sum() / e_in.sum())
    (e,) = energies
    return float(e[ranks[0]:].sum() / max(e.sum(), 1e-300))


def pays_off(c: Choice, max_cost_ratio: float) -> bool:
    return c.macs_after <= max_cost_ratio * c.macs_before and c.params_after < c.params_before


def why_not(c: Choice, max_cost_ratio: float) -> str:
    return (f"{c.method} at rank {'x'.join(map(str, c.ranks))} would cost {c.macs_ratio:.2f}x the MACs "
            f"and {c.params_after / c.params_before:.2f}x the parameters (factorized only at <= "
            f"{max_cost_ratio:.2f}x the MACs)")


Decision = tuple[dict[str, Choice], dict[str, str]]


def by_energy(layers: list[Layer], energy: float, multiple: int, conv_method: str, max_cost_ratio: float) -> Decision:
    """Per layer, the smallest rank (per method) keeping ``energy`` of the squared singular values, rounded
    up to the multiple; of the methods that pay off, the one with fewer MACs."""
    plan, skipped = {}, {}
    for layer in layers:
        options = []
        for method in methods(layer, conv_method):
            energies = tuple(e.numpy() for e in spectra(layer.module, method))
            needed = [int(np.searchsorted(np.cumsum(e) / e.sum(), energy - 1e-12) + 1) for e in energies]
            if method == "tucker2":  # energies are (cout-mode, cin-mode); ranks are (r_in, r_out)
                spec = layer.geometry.spec
                ranks = (round_up(needed[1], multiple, spec.cin), round_up(needed[0], multiple, spec.cout))
            else:
                ranks = (round_up(needed[0], multiple, layer.geometry.spec.max_ranks(method)[0]),)
            options.append(layer.choice(method, ranks))
        good = [c for c in options if pays_off(c, max_cost_ratio)]
        if good:
            plan[layer.name] = min(good, key=lambda c: c.macs_after)
        else:
            skipped[layer.name] = f"energy {energy}: " + "; ".join(why_not(c, max_cost_ratio) for c in options)
    return plan, skipped


def by_param_ratio(layers: list[Layer], ratio: float, multiple: int, conv_method: str, max_cost_ratio: float
                   ) -> Decision:
    """Per layer, the largest ranks within ``ratio`` of its parameters; of the methods, the one that keeps
    the most energy."""
    plan, skipped = {}, {}
    for layer in layers:
        best: tuple[float, Choice] | None = None
        for method in methods(layer, conv_method):
            fits = [c for c in (layer.choice(method, r) for r in rank_options(layer, method, multiple))
                    if c.params_after <= ratio * c.params_before and pays_off(c, max_cost_ratio)]
            if fits:
                c = max(fits, key=lambda c: c.params_after)
                err = tail_energy(tuple(e.numpy() for e in spectra(layer.module, method)), method, c.ranks)
                if best is None or err < best[0]:
                    best = (err, c)
        if best is None:
            skipped[layer.name] = (f"no rank (a multiple of {multiple}) fits {ratio:.2f}x its parameters "
                                   f"at <= {max_cost_ratio:.2f}x its MACs")
        else:
            plan[layer.name] = best[1]
    return plan, skipped


def explicit(layers: list[Layer], rank_of: Mapping[str, int], conv_method: str, max_cost_ratio: float) -> Decision:
    """The given rank per layer (tucker2 uses it for both channel modes). A rank above a layer's limit
    is a ConfigError; a rank that does not pay off leaves the layer dense, with the reason."""
    plan, skipped = {}, {}
    for layer in layers:
        rank = rank_of[layer.name]
        options = []
        for method in methods(layer, conv_method):
            limits = layer.geometry.spec.max_ranks(method)
            ranks = (rank, rank) if method == "tucker2" else (rank,)
            if all(r <= lim for r, lim in zip(ranks, limits)):
                options.append(layer.choice(method, ranks))
        if not options:
            limits = ", ".join(f"{m} <= {min(layer.geometry.spec.max_ranks(m))}" for m in methods(layer, conv_method))
            raise ConfigError(
                f"Rank {rank} is too large for layer '{layer.name}' ({_describe(layer)}): the rank must be at "
                f"most min(out, in) ({limits}). Choose a smaller rank for this layer (ranks: {{'{layer.name}': N}}).")
        good = [c for c in options if pays_off(c, max_cost_ratio)]
        if good:
            energies = {c.method: tuple(e.numpy() for e in spectra(layer.module, c.method)) for c in good}
            plan[layer.name] = min(good, key=lambda c: tail_energy(energies[c.method], c.method, c.ranks))
        else:
            skipped[layer.name] = "; ".join(why_not(c, max_cost_ratio) for c in options)
    return plan, skipped


def probed(layer: Layer, multiple: int, conv_method: str, max_cost_ratio: float) -> list[Choice]:
    """The choices whose sensitivity ``by_sensitivity`` measures for ``layer`` (one probe each)."""
    out = []
    for method in methods(layer, conv_method):
        out += thin([c for c in (layer.choice(method, r) for r in rank_options(layer, method, multiple))
                     if pays_off(c, max_cost_ratio)])
    return out


def by_sensitivity(layers: list[Layer], ratio: float, multiple: int, conv_method: str, max_cost_ratio: float,
                   sensitivity: Callable[[Layer, str, tuple[int, ...]], float], budget_of: str = "params",
                   progress: Callable[[], None] = lambda: None) -> tuple[dict[str, Choice], dict[str, str], dict]:
    """Ranks under one global budget: the selected layers together keep at most ``ratio`` of their
    parameters (``budget_of`` "params") or MACs ("macs"), and the budget goes where it lowers the
    measured output error most per unit of it.

    Each candidate's sensitivity is the relative output error with only that layer approximated; the
    allocation is a greedy multiple-choice knapsack (start every layer at its cheapest option, then buy the
    upgrade with the best error reduction per parameter that still fits). Returns the plan, the skipped
    layers and a summary (budget, parameters used)."""
    options: dict[str, list[tuple[int, float, Choice | None]]] = {}
    skipped: dict[str, str] = {}
    for layer in layers:
        opts: list[tuple[int, float, Choice | None]] = []
        for c in probed(layer, multiple, conv_method, max_cost_ratio):
            cost = c.params_after if budget_of == "params" else c.macs_after
            opts.append((cost, sensitivity(layer, c.method, c.ranks), c))
        progress()
        if not opts:
            skipped[layer.name] = f"no rank (a multiple of {multiple}) costs <= {max_cost_ratio:.2f}x its MACs"
            continue
        dense = params(layer.geometry) if budget_of == "params" else macs(layer.geometry)
        opts.append((dense, 0.0, None))  # the layer left dense: no error
        options[layer.name] = sorted(opts, key=lambda o: (o[0], o[1]))
    budget = ratio * sum(o[-1][0] for o in options.values())
    current = {name: 0 for name in options}
    used = sum(o[0][0] for o in options.values())
    while True:
        best = None
        for name, opts in options.items():
            p0, s0, _ = opts[current[name]]
            for j, (p, s, _) in enumerate(opts):
                if p > p0 and s < s0 and used + p - p0 <= budget:
                    gain = (s0 - s) / (p - p0)
                    if best is None or gain > best[0]:
                        best = (gain, name, j)
        if best is None:
            break
        _, name, j = best
        used += options[name][j][0] - options[name][current[name]][0]
        current[name] = j
    plan = {}
    for name, j in current.items():
        choice = options[name][j][2]
        if choice is None:
            skipped[name] = f"kept dense: the global {budget_of} budget went to layers where it lowers the error more"
        else:
            plan[name] = choice
    return plan, skipped, {"budget_of": budget_of, "budget": int(budget), "used": int(used),
                           "budget_met": bool(used <= budget + 1e-9)}


def thin(cands: list[Choice]) -> list[Choice]:
    """At most MAX_CANDIDATES, evenly spread, always keeping the cheapest and the largest."""
    if len(cands) <= MAX_CANDIDATES:
        return cands
    idx = np.unique(np.round(np.linspace(0, len(cands) - 1, MAX_CANDIDATES)).astype(int))
    return [cands[i] for i in idx]


def _describe(layer: Layer) -> str:
    s = layer.geometry.spec
    if s.kind == "linear":
        return f"Linear {s.cin} -> {s.cout}"
    return f"Conv2d {s.cin} -> {s.cout}, kernel {s.kernel[0]}x{s.kernel[1]}"
