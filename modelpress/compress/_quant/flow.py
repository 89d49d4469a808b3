"""``quantize.apply`` step by step: choose layers, fold BatchNorm, fake-quantize, calibrate, train (QAT), fall
back sensitive layers (accuracy-aware), write the weights onto their grid, and attach the ONNX rewrite."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...errors import ConfigError, ModelpressError
from .. import Applied, Storage
from .embeddings import GatherLowering, round_tables
from .hook import OnnxLowering, Plan
from .bias import correct_bias, shift_biases
from .layers import (KeepOnGrid, batches_of, calibrate, check_weights, empty_calibration_error, fold_batchnorm, kind,
                     select, unwrap, weight_specs, wrap)
from .mixed import fallback, sensitivity
from .nbits import NBitsLowering

DYNAMIC_CONV = ("dynamic int8 convolution (ConvInteger) is several times slower than fp32 Conv in ONNX Runtime; "
                "use mode: static for convolutions")
ACT = {"static": "static", "qat": "static", "mixed": "static", "dynamic": "dynamic", "weight_only": None}


def run(prev: Applied, config: Any, task: Any) -> Applied:
    import copy

    model = copy.deepcopy(prev.model)  # the caller's model is never modified
    layers = select(model, config.include, config.exclude, config.per_channel)
    if not layers:
        raise ConfigError("quantize found no Conv or Linear layer to quantize (after 'include'/'exclude'); "
                          "remove the step or change the patterns.")
    check_weights(layers)
    if config.mode == "qat" and task.train_data is None:
        raise ModelpressError("'quantize.mode: qat' fine-tunes the model, but the task has no train_data. Give the "
                              "task training batches, or use mode: static.")
    act = ACT[config.mode]
    has_data = next(iter(batches_of(task.calib_data, 1)), None) is not None
    if act == "static" and not has_data:
        raise empty_calibration_error()
    folded = []
    if config.fold_batchnorm and has_data:
        folded = fold_batchnorm(model, tuple(torch.from_numpy(a) for a in task.example_inputs(2).values()))
    kinds = {n: kind(m) for n, m in layers.items()}
    skipped: dict[str, str] = {}
    if config.mode == "dynamic":
        skipped = {n: DYNAMIC_CONV for n, k in kinds.items() if k == "Conv"}
        layers = {n: m for n, m in layers.items() if n not in skipped}
    spec = config.weight_spec()
    wrapped = wrap(model, layers, weight_specs(layers, config), act)
    ranges: tuple[dict, dict] = ({}, {})
    estimate, shifts = None, {}
    try:
        if act == "static":
            ranges = calibrate(model, wrapped, batches_of(task.calib_data, config.calib_samples), task.input_names,
                               config.calibration, config.percentile)
            if config.bias_correction and config.mode != "qat":
                shifts = correct_bias(model, wrapped, batches_of(task.calib_data, config.calib_samples),
                                      task.input_names, check=batches_of(task.val_data, config.calib_samples))
        if config.mode == "qat":
            _train(model, config, task, prev.train_hooks)
        if config.score_limit is not None:
            demoted, estimate = _accuracy_aware(model, wrapped, config, task, shifts)
            skipped.update(demoted)
    finally:
        unwrap(model, wrapped, write_weights=True)
    layer_bits = {n: (wrapped[n].spec.bits if n in wrapped and wrapped[n].enabled else 32) for n in kinds}
    int8 = {n: kinds[n] for n, b in layer_bits.items() if b <= 8}
    facts: dict[str, Any] = {
        "mode": config.mode, "bits": config.bits, "layer_bits": layer_bits, "fallback_layers": skipped,
        "folded_batchnorm": folded, "weight_granularity": {n: q.spec.granularity for n, q in wrapped.items()},
    }
    if act is not None and config.int8_weight_bits < 8:
        facts["int8_weight_bits"] = config.int8_weight_bits
        facts["quantize_note"] = ("int8 weights use 7 bits (reduce_range): this CPU has no VNNI/AMX int8 dot product, "
                                  "and the AVX2 int8 kernels add u8 x s8 products in pairs into int16, which saturates "
                                  "with full-range weights and corrupts outputs.")
    if shifts:
        facts["bias_correction"] = {n: round(float(v.abs().max()), 6) for n, v in shifts.items()}
    if estimate is not None:
        facts["estimated_score_drop"] = estimate
    on_grid = {n: wrapped[n].spec for n, b in layer_bits.items() if b <= 8}
    lowerings = (OnnxLowering, NBitsLowering, GatherLowering)  # a later quantize step replaces an earlier one's
    storage, rewrites = prev.storage, tuple(r for r in prev.onnx_rewrites if not isinstance(r, lowerings))
    if config.embeddings:
        tables = round_tables(model, config.exclude, shared={id(m.weight) for m in layers.values()})
        if tables:
            on_grid.update(tables)
            facts["embedding_bits"] = {n: 8 for n in sorted(tables)}
            rewrites = (*rewrites, GatherLowering())
    hooks = (*prev.train_hooks, KeepOnGrid(on_grid))
    if act is None:
        storage = Storage("packed", {"granularity": spec.granularity, "group_size": spec.group_size,
                                     "symmetric": spec.symmetric})
        if config.compute != "decoded":
            rewrites = (*rewrites, NBitsLowering(config.bits, config.group_size, config.symmetric,
                                                 int8_inputs=config.compute == "packed_int8"))
    elif int8:
        plan = Plan(mode="dynamic" if act == "dynamic" else "static", layers=int8,
                    per_channel={n: wrapped[n].spec.granularity == "channel" for n in int8},
                    input_ranges={n: r for n, r in ranges[0].items() if n in int8},
                    output_ranges={n: r for n, r in ranges[1].items() if n in int8},
                    fallback=skipped, weight_bits=config.int8_weight_bits)
        rewrites = (*rewrites, OnnxLowering(plan))
    return prev.then(model, facts=facts, storage=storage, onnx_rewrites=rewrites, train_hooks=hooks)


def _train(model: Any, config: Any, task: Any, hooks: tuple[Any, ...]) -> None:
    from ...train import TrainConfig, fit

    fit(model, task.train_data, TrainConfig(epochs=config.qat_epochs, lr=config.qat_lr),
        description="quantization-aware training", hooks=hooks)
    model.eval()


def _subset(data: Any, max_samples: int) -> list[tuple[dict, Any]]:
    out, seen = [], 0
    for inputs, target in data:
        if seen >= max_samples:
            break
        take = min(len(target), max_samples - seen)
        out.append(({k: v[:take] for k, v in inputs.items()}, target[:take]))
        seen += take
    if not out:
        raise ModelpressError("The accuracy-aware fallback (max_score_drop) scores the model on the task's val_data, "
                              "which is empty.")
    return out


def _accuracy_aware(model: Any, wrapped: dict, config: Any, task: Any, shifts: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, str], float]:
    """Fall back the fewest most sensitive layers that bring the simulated score drop within the limit
    (``mixed.fallback``: doubling, then bisection). A layer that goes back to float also gives back its bias
    correction (removed from ``shifts``; restored when the search puts the layer back on int8)."""
    from ...evaluate import evaluate, torch_predict

    data = _subset(task.val_data, config.eval_samples)
    for q in wrapped.values():
        q.enabled = False
    shift_biases(wrapped, shifts, -1.0)  # the float model, as it was
    baseline = evaluate(torch_predict(model, task), task, data)
    shift_biases(wrapped, shifts, 1.0)
    for q in wrapped.values():
        q.enabled = True

    def score_drop() -> float:
        return task.score_drop(baseline, evaluate(torch_predict(model, task), task, data))

    drop = score_drop()
    if drop <= config.score_limit:
        return {}, float(drop)
    scores = sensitivity(model, wrapped, [b for b, _ in data], task.input_names)
    order = sorted(scores, key=scores.get, reverse=True)
    higher = config.weight_spec(8)
    reasons: dict[str, str] = {}

    def demote(name: str) -> Callable[[], None]:
        """Raise ``name`` one step (to 8 bits, or to float with its bias correction taken back); returns the undo."""
        q, reason = wrapped[name], reasons.get(name)
        if q.spec.bits < 8:
            spec = q.spec
            q.spec, q._cache = higher, None
            reasons[name] = f"kept at 8 bits (sensitivity {scores[name]:.2e}) to hold max_score_drop"

            def undo() -> None:
                q.spec, q._cache = spec, None
        else:
            q.enabled = False
            shift = shifts.pop(name, None)
            if shift is not None:
                shift_biases(wrapped, {name: shift}, -1.0)
            reasons[name] = f"kept in float (sensitivity {scores[name]:.2e}) to hold max_score_drop"

            def undo() -> None:
                q.enabled = True
                if shift is not None:
                    shifts[name] = shift
                    shift_biases(wrapped, {name: shift}, 1.0)

        def restore() -> None:
            undo()
            if reason is None:
                del reasons[name]
            else:
                reasons[name] = reason
        return restore

    ladder = order + order if any(q.spec.bits < 8 for q in wrapped.values()) else order
    _, drop = fallback(ladder, demote, score_drop, config.score_limit, drop)
    return reasons, float(drop)
