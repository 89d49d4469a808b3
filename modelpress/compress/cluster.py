"""Weight clustering (parameter sharing): every weight of a layer becomes one of a few shared values.

Each selected ``Linear``/``Conv`` weight is clustered with 1-D k-means, per layer or per output channel,
and replaced by its centroids, so a layer holds at most ``clusters`` distinct values (its codebook) and
can be stored as a codebook plus small indices (the ``codebook`` storage codec, asked for here).

Sparsity-preserving: weights that are exactly zero (pruned) form their own cluster, fixed at zero, and
that cluster counts towards ``clusters``. Cluster-preserving fine-tuning: a train hook replaces the
gradient of every weight by the sum of its cluster's gradients (the centroid's gradient, as in Deep
Compression) and snaps the members back together after each optimizer step, so any later training step
(``epochs`` here, ``finetune``, ``distill``) keeps the model clustered and the zeros at zero.

>>> from modelpress.zoo import LeNet300100
>>> m = apply(LeNet300100(), Config(clusters=16, encode=False), task=None)
>>> len(m.net[1].weight.unique()) <= 16
True
"""
from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import Applied, Storage, Tools
from ._kmeans import kmeans_1d
from ..train import TrainConfig
from ..config import check
from ..errors import ConfigError

MIN_CLUSTERS, MAX_CLUSTERS = 2, 256
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

SEARCH_SPACE: dict[str, list] = {
    "clusters": [32, 16, 64, 256, 8],
    "init": ["linear", "density", "kmeans++"],
    "granularity": ["layer"],  # per channel needs clusters <= weights per channel: a user's choice, not a default
}


@dataclass(frozen=True)
class Config(TrainConfig):
    """Clustering settings; the training-loop fields (``lr``, ``optimizer``, ...) apply to ``epochs``."""

    clusters: int = 32  # shared values per layer (or per output channel), the pruned zero included
    layer_clusters: dict[str, int] = field(default_factory=dict)  # fnmatch pattern -> clusters; first match wins
    granularity: Literal["layer", "channel"] = "layer"  # one codebook per layer or per output channel
    init: Literal["linear", "density", "kmeans++"] = "linear"
    iterations: int = 50  # at most this many k-means (Lloyd) iterations; stops earlier when stable
    preserve_sparsity: bool = True  # exact zeros stay zero and form their own cluster
    epochs: int = 0  # cluster-preserving fine-tuning epochs inside this step (0 = none)
    lr: float = 1e-4  # fine-tuning starts from trained weights: a small step keeps what they know
    encode: bool = True  # store the exported weights with the 'codebook' codec
    entropy: Literal["huffman", "zstd", "none"] = "huffman"  # the codec's entropy coder
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        named = [("clusters", self.clusters), *[(f"layer_clusters['{p}']", v) for p, v in self.layer_clusters.items()]]
        for where, k in named:
            check(MIN_CLUSTERS <= k <= MAX_CLUSTERS,
                  f"{where} must be between {MIN_CLUSTERS} and {MAX_CLUSTERS} (indices are stored in at most "
                  f"8 bits), got {k}.")
        check(self.iterations >= 1, f"iterations must be at least 1, got {self.iterations}.")


def eligible_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LAYER_TYPES) and isinstance(m.weight, nn.Parameter)}


def select_layers(model: nn.Module, config: Config) -> dict[str, nn.Module]:
    """The eligible layers picked by ``include``/``exclude``; a pattern that matches none is an error."""
    layers = eligible_layers(model)
    names = ", ".join(layers) or "(none)"
    for where, patterns in (("include", config.include), ("layer_clusters", tuple(config.layer_clusters))):
        for pattern in patterns:
            if not fnmatch.filter(layers, pattern):
                raise ConfigError(f"The {where} pattern '{pattern}' matches no clusterable layer "
                                  f"(Linear or Conv). Eligible layers: {names}.")
    return {n: m for n, m in layers.items()
            if (not config.include or any(fnmatch.fnmatchcase(n, p) for p in config.include))
            and not any(fnmatch.fnmatchcase(n, p) for p in config.exclude)}


def clusters_for(name: str, config: Config) -> int:
    for pattern, k in config.layer_clusters.items():
        if fnmatch.fnmatchcase(name, pattern):
            return k
    return config.clusters


def check_sizes(layers: dict[str, nn.Module], config: Config) -> None:
    """Every clustered group (layer or channel) must hold at least as many weights as clusters."""
    for name, module in layers.items():
        k, w = clusters_for(name, config), module.weight
        per_group = w.numel() if config.granularity == "layer" else w[0].numel()
        if per_group < k:
            what = "weights" if config.granularity == "layer" else "weights per output channel"
            raise ConfigError(
                f"Layer '{name}' has {per_group} {what}, fewer than the {k} clusters asked for. Lower "
                f"'clusters' (or set layer_clusters: {{'{name}': {max(MIN_CLUSTERS, min(per_group, k) // 2)}}}), "
                f"use granularity: layer, or leave the layer out with exclude: ['{name}']."
            )


def cluster_array(weight: np.ndarray, k: int, config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster one weight array.

    Returns ``(clustered, groups, frozen)``: the clustered float32 array; for every weight the id of
    its group (clusters numbered across channels, so ids are unique within the layer); and, per group
    id, whether it is the fixed zero cluster.
    """
    rows = weight.reshape(1, -1) if config.granularity == "layer" else weight.reshape(weight.shape[0], -1)
    clustered = np.zeros(rows.shape, np.float32)
    groups = np.zeros(rows.shape, np.int64)
    frozen: list[bool] = []
    for r, row in enumerate(rows):
        zero = row == 0 if config.preserve_sparsity else np.zeros(row.shape, bool)
        has_zero = bool(zero.any())
        live = ~zero
        if live.any():
            centroids, labels = kmeans_1d(row[live], k - 1 if has_zero else k, config.init, config.iterations,
                                          config.seed)
            clustered[r, live] = centroids.astype(np.float32)[labels]
            groups[r, live] = len(frozen) + labels
            frozen += [False] * len(centroids)
        if has_zero:
            groups[r, zero] = len(frozen)
            frozen.append(True)
    return clustered.reshape(weight.shape), groups.reshape(weight.shape), np.asarray(frozen, bool)


class ClusterHook:
    """Train hook that keeps clustered weights clustered (see ``modelpress.compress.TrainHook``).

    Per parameter name: ``groups`` (the cluster id of every weight, flattened), ``counts`` (members per
    cluster) and ``frozen`` (clusters fixed at zero). Parameters are looked up by name on each call.
    """

    def __init__(self) -> None:
        self.layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add(self, param_name: str, groups: np.ndarray, frozen: np.ndarray) -> None:
        g = torch.from_numpy(groups.reshape(-1))
        self.layers[param_name] = (g, torch.bincount(g, minlength=len(frozen)), torch.from_numpy(frozen))

    def _live(self, model: nn.Module):
        for name, (groups, counts, frozen) in self.layers.items():
            try:
                param = model.get_parameter(name)
            except AttributeError:
                continue  # a later step replaced the layer: it is no longer clustered
            if param.numel() == groups.numel():
                yield param, groups.to(param.device), counts.to(param.device), frozen.to(param.device)

    def before_step(self, model: nn.Module) -> None:
        """Each weight's gradient becomes its cluster's summed gradient; zero clusters get none."""
        for param, groups, counts, frozen in self._live(model):
            if param.grad is None:
                continue
            sums = torch.zeros(len(counts), dtype=torch.float64, device=param.device)
            sums.index_add_(0, groups, param.grad.reshape(-1).double())
            sums[frozen] = 0
            param.grad.copy_(sums[groups].view_as(param.grad))

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Members of a cluster share one value (their mean; equal already after identical updates)."""
        for param, groups, counts, frozen in self._live(model):
            sums = torch.zeros(len(counts), dtype=torch.float64, device=param.device)
            sums.index_add_(0, groups, param.reshape(-1).double())
            means = sums / counts.clamp(min=1)
            means[frozen] = 0
            param.copy_(means[groups].view_as(param))


def layer_facts(layers: dict[str, nn.Module], config: Config) -> dict[str, dict[str, Any]]:
    out = {}
    for name, module in layers.items():
        w = module.weight.detach()
        rows = w.reshape(1, -1) if config.granularity == "layer" else w.reshape(w.shape[0], -1)
        out[name] = {"weights": int(w.numel()), "clusters": int(max(len(r.unique()) for r in rows)),
                     "sparsity": round(float((w == 0).float().mean()), 6)}
    return out


def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``), before it
    runs: k-means over every weight (about 20 iterations of weights x clusters distances) and the
    cluster-preserving epochs."""
    return 1.0 + profile.params * config.clusters * 20 * 1e-9 + profile.epoch_s(config.epochs)


def apply(model: nn.Module | Applied, config: Config, task: Any, tools: Tools = Tools()) -> Applied:
    """A clustered copy of the model (the input is left unchanged), fine-tuned for ``config.epochs``."""
    prev = Applied.of(model)
    model = copy.deepcopy(prev.model)
    layers = select_layers(model, config)
    check_sizes(layers, config)
    hook = ClusterHook()
    with torch.no_grad():
        for name, module in layers.items():
            weight = module.weight
            clustered, groups, frozen = cluster_array(weight.detach().cpu().double().numpy(),
                                                      clusters_for(name, config), config)
            weight.copy_(torch.from_numpy(clustered).to(weight.dtype))
            hook.add(f"{name}.weight", groups, frozen)
    hooks = (*prev.train_hooks, hook)
    if config.epochs > 0:
        from ..train import fit, train_data_for

        fit(model, train_data_for(task), config.train_config(), description="cluster-preserving fine-tuning",
            hooks=hooks)
    facts = {"cluster_layers": layer_facts(layers, config), "cluster_granularity": config.granularity,
             "cluster_init": config.init}
    storage = prev.storage
    if config.encode:
        # Structured-pruning records asked for by an earlier step travel on into the manifest.
        pruning = list(prev.storage.options.get("pruning", [])) if prev.storage else []
        storage = Storage("codebook", {"entropy": config.entropy, **({"pruning": pruning} if pruning else {})})
    return prev.then(model.eval(), facts=facts, storage=storage, train_hooks=hooks)
