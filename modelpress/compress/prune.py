"""Pruning: structured channel/head removal that makes the model smaller and faster, unstructured
magnitude pruning and N:M semi-structured sparsity that make the stored file smaller.

>>> import torch
>>> from modelpress.zoo import TinyResNet
>>> from modelpress.compress import prune
>>> task = prune.example_task((1, 16, 16))
>>> small = prune.apply(TinyResNet(), prune.Config(method="channel", ratio=0.5, round_to=1), task)
>>> small.model.stem[0].out_channels
8
>>> prune.apply(TinyResNet(), prune.Config(ratio=0.5), task).facts["prune_round_to"]["chosen_by"]
'default'

Methods (``Config.method``):

- ``channel``: remove whole channels, filters, neurons and attention heads, coupled across layers by
  the dependency graph (``_graph``); the exported model has fewer parameters and MACs. The cuts are
  recorded as data (layer, axis, kept indices) in the artifact's manifest; :func:`rebuild` replays
  them on the original model. ``round_to`` keeps a multiple of that many channels per group: channel
  counts off the runtime's vector blocks can make the pruned model slower than fp32 (EfficientNet-Lite2,
  30% on ONNX Runtime: 1.7x with 1, 0.55-0.6x with 8/16/32). ``"auto"`` (the default) times the pruned
  model at multiples 1, 8, 16 and 32 on the recipe's runtime (``Tools.time_ratio``) and keeps the
  smallest within 5% of the fastest; untimed (no ``time_ratio``, e.g. ``apply`` outside a pipeline) it is
  16. ``facts["prune_round_to"]`` says which and how (``_prune/roundto.py``). Attention heads go whole
  (``modelpress.zoo.Attention``'s ``num_heads``; Hugging Face BERT-family ``num_attention_heads``) and are
  never rounded; a Hugging Face model's config carries the record, so its ``save_pretrained`` folder
  reloads with :func:`from_pretrained` (``_prune/hf.py``). ``refit`` (on by default): after the cuts, each
  layer that lost input channels is re-fitted by least squares to the unpruned model's output of that layer
  on the task's calibration inputs (no labels, no gradients; ``compress/_refit.py``), and kept unless it lowers
  the validation score; ``facts["recovery"]`` gives the validation score before and after (MiniLM without half
  its feed-forward neurons: validation cosine 0.70 -> 0.88; ``benchmarks/prune_real.py``).
- ``magnitude``: zero the weights with the smallest |w| (per layer or one global threshold), in
  ``steps`` rounds with ``epochs`` of fine-tuning after each. Stored with the ``sparse`` codec.
- ``nm``: keep the ``n`` largest of every ``m`` consecutive weights along the input channels (2:4).

Unstructured and N:M sparsity gain no speed from dense CPU kernels; the result says so, and the
pipeline measures the latency.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from . import Applied, Storage, Tools
from ..config import check
from ..errors import ConfigError, ModelpressError
from ._prune.channel import RECORD_VERSION, schedule

SEARCH_SPACE: dict[str, list] = {
    "method": ["channel", "magnitude", "nm"],
    "ratio": [0.5, 0.3, 0.7],
    "importance": ["l2", "taylor", "bn_scale", "l1"],
    "round_to": ["auto", 1, 8, 16],
}

NOTE_SPARSE = ("{what}: the zeros shrink the stored file (sparse codec), but dense CPU kernels still compute "
               "every weight, so expect no speedup on CPU runtimes; see latency_ratio for the measured latency.")
NOTE_NM = (" N:M (2:4) sparsity runs faster only where a kernel consumes the pattern: NVIDIA GPUs with "
           "sparse tensor cores (Ampere and later, via cuSPARSELt or TensorRT).")


@dataclass(frozen=True)
class Config:
    method: Literal["channel", "magnitude", "nm"] = "channel"
    ratio: float = 0.5      # share removed: channels/heads of each group (channel), weights (magnitude)
    target: Literal["channels", "params", "macs"] = "channels"  # channel: what `ratio` is a share of
    importance: Literal["l2", "l1", "bn_scale", "taylor"] = "l2"  # channel: which units go first
    scope: Literal["layer", "global"] = "layer"  # same ratio everywhere, or one ranking over all layers
    round_to: int | str = "auto"  # channel: keep a multiple of this many channels per group; "auto": timed (see below)
    n: int = 2              # nm: keep n of every m weights
    m: int = 4
    steps: int = 1          # prune in this many rounds (cubic schedule), fine-tuning after each
    epochs: int = 0         # fine-tuning epochs after each round (0 = none; recovery needs a few)
    lr: float = 1e-3        # fine-tuning learning rate
    refit: bool = True      # channel: re-fit the layers that lost inputs to the unpruned model on the calibration inputs
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(0 <= self.ratio < 1, f"ratio must be in [0, 1), got {self.ratio}: it is the share of channels "
                                   f"(or weights) removed, e.g. 0.5 for half.")
        check(self.round_to == "auto" or (type(self.round_to) is int and self.round_to >= 1),
              f"round_to must be 'auto' (the multiple that runs fastest on the recipe's runtime, timed) or a whole "
              f"number >= 1 (1 = no rounding; 8 or 16 for vectorized kernels), got {self.round_to!r}.")
        check(1 <= self.n < self.m, f"nm sparsity needs 1 <= n < m, got n={self.n}, m={self.m}.")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}.")
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}.")
        check(self.lr > 0, f"lr must be positive, got {self.lr}.")
        check(self.target == "channels" or self.method == "channel",
              f"target '{self.target}' applies to method 'channel' only; method '{self.method}' prunes a share of weights.")


def example_inputs(task: Any, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
    inputs = task.example_inputs(batch_size)
    return tuple(torch.from_numpy(inputs[n]) for n in task.input_names)


def apply(model: nn.Module | Applied, config: Config, task: Any, tools: Tools = Tools()) -> Applied:
    """Prune a copy of the model; the input model is not modified."""
    from ._prune import counts

    prev = Applied.of(model)
    model = copy.deepcopy(prev.model).eval()
    example = example_inputs(task)
    params_before, macs_before = counts.params(model), counts.macs(model, example)
    if config.epochs > 0 and getattr(task, "train_data", None) is None:
        raise ConfigError(f"prune epochs: {config.epochs} fine-tunes after pruning, but the task "
                          f"'{getattr(task, 'name', task)}' has no train_data (the reference image tasks have no "
                          f"labels: they are scored against the fp32 model's outputs). Set epochs: 0, or recover "
                          f"with a later distill step (data: calib).")
    if config.method == "channel":
        from ._prune import roundto
        from ._prune.channel import prune_channels

        config, chosen = roundto.resolve(model, config, task, example, tools.time_ratio)
        recovery: dict[str, Any] = {}
        model, facts, pruning = prune_channels(
            model, config, task, example, lambda m, step: _fine_tune(m, config, task, step, prev.train_hooks),
            (lambda reference, m, cuts: recovery.update(refit_round(reference, m, cuts, task))) if config.refit else None)
        facts.update(recovery)
        if chosen is not None:
            facts["prune_round_to"] = chosen
        if pruning["cuts"]:
            from ._prune import hf

            for name in hf.attach(model, pruning):  # save_pretrained folders then reload with from_pretrained
                facts.setdefault("prune_hf_record", {})[name or "(model)"] = hf.RECORD_KEY
        params_after = counts.params(model)
        sparsity = 1 - params_after / params_before
        hooks = prev.train_hooks
    else:
        facts, hooks, sparsity = _unstructured(model, config, task, prev.train_hooks)
        params_after = counts.nonzero_params(model)
        pruning = {}
    facts.update(sparsity=round(sparsity, 6), params_before=params_before, params_after=params_after,
                 macs_before=macs_before, macs_after=counts.macs(model, example))
    return prev.then(model.eval(), facts=facts, storage=_merged_storage(prev.storage, pruning), train_hooks=hooks)


def _fine_tune(model: nn.Module, config: Config, task: Any, round_: int, hooks: tuple[Any, ...]) -> None:
    if config.epochs == 0:
        return
    from ..train import TrainConfig, fit

    fit(model, task.train_data, TrainConfig(epochs=config.epochs, lr=config.lr),
        description=f"prune: fine-tuning round {round_}", hooks=hooks)


def refit_round(reference: nn.Module, pruned: nn.Module, cuts: list[dict[str, Any]], task: Any) -> dict[str, Any]:
    """Re-fit, in place, the layers of ``pruned`` that lost inputs (``compress/_refit.py``) on the task's
    calibration inputs, kept unless it lowers the validation score; the facts ``prune_refit`` (what was
    re-fitted, with what) and ``recovery`` (validation scores before and after)."""
    from . import _refit

    facts, recovery = _refit.checked(pruned, reference, _refit.pruned_pairs(cuts), task,
                                     "prune: re-fitting the pruned layers")
    return {"prune_refit": facts, "recovery": recovery}


def _merged_storage(current: Storage | None, pruning: dict[str, Any]) -> Storage:
    """The sparse codec's request, keeping the records of earlier pruning steps."""
    if current is None or current.encoding != "sparse":
        return Storage("sparse", {"pruning": [pruning]} if pruning else {})
    earlier = list(current.options.get("pruning", []))
    return Storage("sparse", {**current.options, "pruning": earlier + ([pruning] if pruning else [])})


def _unstructured(model: nn.Module, config: Config, task: Any, hooks: tuple[Any, ...]
                  ) -> tuple[dict[str, Any], tuple[Any, ...], float]:
    """Zero weights in place; returns the facts, the train hooks (one mask hook holding every step's
    masks) and the share of zeros in the pruned layers."""
    from ._prune import masks as M

    layers = M.eligible_layers(model, config.include, config.exclude)
    if not layers:
        raise ConfigError("No convolution or linear layer is left to prune after include/exclude.")
    earlier = next((h for h in hooks if isinstance(h, M.MaskHook)), None)
    hook = M.MaskHook(dict(earlier.masks) if earlier is not None else {})
    hooks = tuple(h for h in hooks if h is not earlier) + (hook,)
    if config.method == "nm":
        masks, skipped = M.n_m(model, layers, config.n, config.m)
        if not masks:
            raise ConfigError(f"No layer has input channels in multiples of m={config.m}; nothing to prune {config.n}:{config.m}. "
                              f"Skipped: {', '.join(skipped)}.")
        M.apply(model, masks)
        hook.update(masks)
        _fine_tune(model, config, task, 1, hooks)
        facts = {"nm_skipped_layers": skipped, "prune_method": f"{config.n}:{config.m}",
                 "prune_note": NOTE_SPARSE.format(what=f"{config.n}:{config.m} sparsity") + NOTE_NM}
    else:
        for step in range(1, config.steps + 1):
            masks = M.magnitude(model, layers, schedule(config.ratio, step, config.steps), config.scope)
            M.apply(model, masks)
            hook.update(masks)
            _fine_tune(model, config, task, step, hooks)
        facts = {"prune_method": "magnitude", "prune_note": NOTE_SPARSE.format(what="Unstructured sparsity")}
    weights = [model.get_parameter(name).detach() for name in hook.masks]
    return facts, hooks, float(sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights)))


def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``), before it
    runs: importance scoring (Taylor needs gradients over a few batches), ``round_to: auto`` exporting and
    timing three alignments of the whole model, the re-fit (a pass over the calibration inputs per layer and
    three validation scorings) and the fine-tuning epochs."""
    from . import _refit

    seconds = 1.0 + profile.forward_s(64) * (4.0 if config.importance == "taylor" else 1.0)
    if config.method == "channel" and config.round_to == "auto":
        seconds += 3 * 0.5 * (profile.base_s or profile.forward_s(512))
    if config.method == "channel" and config.refit:
        seconds += _refit.estimate_s(profile)
    return seconds + profile.epoch_s(config.epochs * config.steps)


def explain(result: Any) -> list[str]:
    """What the re-fit after channel pruning won back (``recovery`` facts), and why a channel-pruned result is
    slower than its fp32 baseline (a latency ratio whose interquartile range lies above 1.0): fewer MACs in
    shapes the runtime's kernels run slowly."""
    from ._refit import notes

    return notes(result.facts, "prune_refit", "prune", "the cuts") + _slower_lines(result)


def _slower_lines(result: Any) -> list[str]:
    facts = result.facts
    slower = {b: r for b, r in result.latency_ratio.items() if result.latency_verdict.get(b) == "slower"}
    if facts.get("prune_method") != "channel" or not slower:
        return []
    chosen = facts.get("prune_round_to") or {}
    given = [s["prune"].get("round_to") for s in (getattr(result, "recipe", None) or [])
             if isinstance(s, dict) and isinstance(s.get("prune"), dict)]
    value = chosen.get("value", given[-1] if given else None)
    how = f"round_to {value}" + (f", chosen by {chosen['chosen_by']}" if chosen else "")
    advice = ("Try round_to: 16, or a smaller ratio." if not isinstance(value, int) or value < 16 else
              "round_to is already a multiple of 16: try a smaller ratio, exclude the layers that slowed, "
              "or measure again on an idle machine.")
    return [f"Channel pruning made the model slower, not faster ({', '.join(f'batch {b}: {r:.2f}x fp32' for b, r in slower.items())}; "
            f"{how}): the pruned layers have fewer MACs, but channel counts off the runtime's vector blocks "
            f"(multiples of 8 or 16) fall back to slower kernels. {advice}"]


def rebuild(model: nn.Module, pruning: dict[str, Any] | list[dict[str, Any]]) -> nn.Module:
    """The pruned architecture, rebuilt from the original ``model`` and a pruning record (as stored in
    the artifact manifest under ``"pruning"``), with no pickles: weights of kept channels are copied
    from ``model``; load fine-tuned weights afterwards with ``load_state_dict``."""
    from . import _surgery

    records = pruning if isinstance(pruning, list) else [pruning]
    out = copy.deepcopy(model)
    for rec in records:
        if rec.get("version") != RECORD_VERSION:
            raise ModelpressError(f"Unknown pruning record version {rec.get('version')!r}; expected {RECORD_VERSION}.")
        _surgery.apply_cuts(out, rec["cuts"])
    return out.eval()


def from_pretrained(folder: Any, auto_class: str = "AutoModel", **kwargs: Any) -> nn.Module:
    """A Hugging Face model folder written by ``save_pretrained`` after channel pruning (its config.json keeps
    the original architecture and the cuts under ``modelpress_pruning``): the original is built from the
    config, the cuts replayed, the saved weights loaded. A folder without a record loads as usual."""
    from ._prune import hf

    return hf.from_pretrained(folder, auto_class, **kwargs)


def read_record(artifact_folder: Any) -> list[dict[str, Any]]:
    """The pruning records stored in an artifact's manifest (empty when none)."""
    from ..artifact import load

    return list(load(artifact_folder, verify=False).manifest.get("pruning", []))


def example_task(shape: tuple[int, ...], num_classes: int = 10, samples: int = 64, seed: int = 0) -> Any:
    """A random-data task for inputs of ``shape`` (docs and quick trials; not for accuracy)."""
    from ..task import Batches, Task

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *shape)).astype(np.float32)
    y = rng.integers(0, num_classes, samples)
    return Task(name="random", build_model=lambda: None, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x}, batch_size=16), val_data=Batches({"x": x}, y, batch_size=32),
                test_data=Batches({"x": x}, y, batch_size=32),
                train_data=Batches({"x": x}, y, batch_size=32, shuffle=True), num_classes=num_classes)
