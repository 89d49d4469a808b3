"""Quantization: n-bit weights, dynamic and static int8, quantization-aware training, mixed precision.

Modes (``quantize: {mode: ...}`` in a recipe):

- ``static`` (default): int8 weights (per output channel for convolutions, per tensor for Linear layers
  unless per-channel scales cut their error by ``per_channel_min_gain_db``) and u8 activations with ranges
  calibrated on the task's calibration data, biases corrected for the mean shift rounding causes; exported
  as ONNX QDQ that ONNX Runtime fuses into its int8 kernels.
- ``dynamic``: int8 weights of Linear layers; activations quantized at run time (no calibration).
- ``weight_only``: 2- to 8-bit weights, per channel or in groups, stored packed (``storage: packed``) so the
  artifact really shrinks; the runtime decodes them and computes in float (``compute: decoded``), or, with
  ``compute: packed``, runs MatMul/Gemm layers on ONNX Runtime's ``MatMulNBits`` from the packed weights.
- ``qat``: static int8 fine-tuned through fake quantization (straight-through gradients) with the shared
  training loop, then exported like ``static``.
- ``mixed``: static int8, with the layers whose quantization hurts most kept in float until the score drop
  is at most ``max_score_drop``. ``max_score_drop`` works the same way in every mode (weight_only returns
  sensitive layers to 8 bits first).

Every mode also stores ``nn.Embedding`` tables as int8 rows with one scale each (``embeddings``), gathered as
int8 in the exported graph.

Facts for the result: ``mode``, ``bits``, ``layer_bits``, ``fallback_layers`` (layer -> why it is not int8),
``embedding_bits`` (tables rounded to int8) and ``int8_embeddings`` (tables the exported graph gathers as int8),
``int8_layers`` (what the exported graph puts on int8), ``folded_batchnorm``, ``bias_correction`` (largest
bias shift per layer). The int8 modes lower to ONNX QDQ (exports ``onnx`` and ``openvino``; other exporters
refuse them rather than run a float graph with rounded weights); which ops then run in int8
(``int8_ops`` / ``float_ops`` / ``quant_boundaries``) is read from the artifact by the runtime.

>>> from modelpress.config import parse
>>> parse(Config, {"mode": "weight_only", "bits": 4, "group_size": 64}, "quantize").bits
4
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from . import Applied, Tools
from ..config import check

STATIC_MODES = ("static", "qat", "mixed")
SEARCH_SPACE: dict[str, list] = {
    "mode": ["static", "dynamic", "weight_only", "mixed"],
    "calibration": ["mse", "minmax", "percentile", "entropy"],
    "per_channel": [True, False],
}


@dataclass(frozen=True)
class Config:
    mode: Literal["static", "dynamic", "weight_only", "qat", "mixed"] = "static"
    bits: int = 8  # weight bits: 8 for the int8 modes (ONNX Runtime's kernels), 2..8 for weight_only
    per_channel: bool = True  # one scale per output channel where it pays (see per_channel_min_gain_db)
    per_channel_min_gain_db: float = 12.0  # int8 Linear layers: per channel only if it cuts weight error this much
    group_size: int = 0  # weight_only: values sharing a scale along a channel's inputs (0 = the whole channel)
    # weight_only: how the runtime computes. decoded: the file holds packed codes, decoded to float32 when the
    # model loads (the smallest file; memory and speed as fp32). packed: MatMul/Gemm layers run on ONNX Runtime's
    # MatMulNBits from the packed weights (the graph holds no float32 copy of them; memory not yet measured);
    # needs group_size a power of two >= 16. packed_int8: as packed, and each block of a layer's input is rounded
    # to int8 on the fly to multiply in integers (MatMulNBits accuracy_level 4; not exact to the torch model;
    # not faster than fp32 on MiniLM on a 2-core AVX2 CPU, BENCHMARKS.md).
    compute: Literal["decoded", "packed", "packed_int8"] = "decoded"
    symmetric: bool = True  # weights: zero point 0 (the int8 modes need it)
    weight_range: Literal["minmax", "mse"] = "minmax"  # weight clipping: full range, or least squared error
    calibration: Literal["minmax", "percentile", "mse", "entropy"] = "mse"  # activation range observer
    percentile: float = 99.99  # for calibration: percentile
    calib_samples: int = 512  # calibration samples used at most (streamed)
    # int8 modes: weights in 7 bits (values -63..63) instead of 8. ONNX Runtime's and OpenVINO's int8 kernels on
    # CPUs without an int8 dot-product instruction (VNNI, AMX) add u8 x s8 products in pairs into int16, which
    # saturates with full-range weights; auto: on exactly when this CPU has neither (what ONNX Runtime's own
    # quantizer recommends with reduce_range).
    reduce_range: Literal["auto", "on", "off"] = "auto"
    # nn.Embedding tables int8 per row (every mode), gathered as int8 rows times their scale (a transformer's
    # word-embedding table is often half its weights); false: tables stay float
    embeddings: bool = True
    bias_correction: bool = True  # static/mixed: shift each bias by the mean output error rounding caused
    fold_batchnorm: bool = True  # fold BatchNorm into the convolution before quantizing
    max_score_drop: float | None = None  # accuracy-aware fallback (mode mixed: 0.005 when unset)
    eval_samples: int = 2000  # validation samples the accuracy-aware fallback scores on
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 8, f"'quantize.bits' must be between 2 and 8, got {self.bits}.")
        check(self.mode == "weight_only" or self.bits == 8,
              f"'quantize.mode: {self.mode}' runs on ONNX Runtime's int8 kernels and needs bits: 8 (got {self.bits}); "
              f"for {self.bits}-bit weights use mode: weight_only.")
        check(self.mode == "weight_only" or self.symmetric,
              f"'quantize.mode: {self.mode}' needs symmetric: true (int8 kernels take weights with zero point 0); "
              f"asymmetric weights are for mode: weight_only.")
        check(self.group_size >= 0, f"'quantize.group_size' must be >= 0, got {self.group_size}.")
        check(self.group_size == 0 or self.mode == "weight_only",
              f"'quantize.group_size' applies to mode: weight_only; the int8 kernels of mode {self.mode} take one "
              f"scale per channel. Set group_size: 0.")
        check(self.compute == "decoded" or self.mode == "weight_only",
              f"'quantize.compute: {self.compute}' runs weight_only layers from their packed weights; mode {self.mode} "
              f"has its own int8 kernels. Remove compute or set mode: weight_only.")
        if self.compute != "decoded":
            from ._quant.nbits import BITS, check_block

            check(self.bits in BITS, f"'quantize.compute: {self.compute}' runs on ONNX Runtime's MatMulNBits, which takes "
                                     f"{', '.join(map(str, BITS))}-bit weights; got bits: {self.bits}.")
            problem = check_block(self.group_size)
            check(problem is None, f"'quantize.compute: {self.compute}': {problem}")
        check(self.group_size == 0 or self.per_channel,
              "'quantize.group_size' splits each output channel into groups, so it needs per_channel: true.")
        check(0 <= self.per_channel_min_gain_db < float("inf"),
              f"'quantize.per_channel_min_gain_db' must be >= 0 (0: always per channel), got {self.per_channel_min_gain_db}.")
        check(0 < self.percentile <= 100, f"'quantize.percentile' must be in (0, 100], got {self.percentile}.")
        check(self.calib_samples >= 1, f"'quantize.calib_samples' must be at least 1, got {self.calib_samples}.")
        check(self.max_score_drop is None or self.max_score_drop >= 0,
              f"'quantize.max_score_drop' must be >= 0, got {self.max_score_drop}.")
        check(self.eval_samples >= 1, f"'quantize.eval_samples' must be at least 1, got {self.eval_samples}.")
        check(self.qat_epochs >= 1, f"'quantize.qat_epochs' must be at least 1, got {self.qat_epochs}.")
        check(0 < self.qat_lr < float("inf"), f"'quantize.qat_lr' must be a positive number, got {self.qat_lr}.")

    @property
    def int8_weight_bits(self) -> int:
        """The bits int8 weights use: 7 with a reduced range (``reduce_range``), else 8."""
        from ..doctor import int8_dot_product

        return 7 if self.reduce_range == "on" or (self.reduce_range == "auto" and not int8_dot_product()) else 8

    def weight_spec(self, bits: int | None = None, per_channel: bool | None = None) -> Any:
        from .quantizer import WeightSpec

        channel = self.per_channel if per_channel is None else per_channel
        granularity = "group" if self.group_size else ("channel" if channel else "tensor")
        if bits is None:
            bits = self.bits if self.mode == "weight_only" else self.int8_weight_bits
        return WeightSpec(bits, self.symmetric, granularity, self.group_size or 128, self.weight_range)

    @property
    def score_limit(self) -> float | None:
        return 0.005 if self.mode == "mixed" and self.max_score_drop is None else self.max_score_drop


def apply(model: Any, config: Config, task: Any, tools: Tools = Tools()) -> Applied:
    """Quantize a copy of the model per ``config`` (the input is not modified): an ``Applied`` whose model has
    its weights on their integer grid (BatchNorm folded) and, for the int8 modes, the ONNX rewrite for export."""
    from ._quant import flow

    return flow.run(Applied.of(model), config, task)


def estimate_s(config: Config, profile: Any) -> float:
    """Seconds ``apply`` is expected to take on a model of ``profile`` (``search.cost.Profile``), before it
    runs: rounding weights; for the int8 modes calibration passes (the mse and entropy observers cost about
    twice a forward pass), bias correction's passes over calibration and validation inputs; mixed precision's
    probe per layer and the fallback's scorings (doubling, then bisection); QAT's epochs."""
    seconds = 1.0 + profile.params * 2e-7
    if config.mode in ("dynamic", "weight_only"):
        return seconds
    calib = profile.forward_s(config.calib_samples)
    seconds += calib * (3.0 if config.calibration in ("mse", "entropy") else 1.5)
    if config.bias_correction and config.mode in ("static", "mixed"):
        seconds += 3.0 * calib
    if config.mode == "mixed":
        scorings = 2 + 2 * math.ceil(math.log2(profile.layers + 1))  # mixed.fallback: doubling, then bisection
        seconds += profile.layers * calib + scorings * profile.forward_s(min(config.eval_samples, profile.val_samples))
    if config.mode == "qat":
        seconds += profile.epoch_s(config.qat_epochs)
    return seconds


def explain(result: Any) -> list[str]:
    """Why an int8 result is slower than its fp32 baseline (batch too small, QDQ islands, missing int8
    kernels, no VNNI/AMX), from the ``Result``'s measured latency and the op precisions the runtime read off
    the artifact. Empty when it is not slower or the runtime reported no op precisions."""
    facts = result.facts
    slower = {b: r for b, r in result.latency_ratio.items() if result.latency_verdict.get(b) == "slower"}
    if facts.get("mode") == "weight_only" and not facts.get("nbits_layers"):
        return [f"mode weight_only stores low-bit weights but decodes them to float32 when the model loads, so "
                f"it runs the fp32 graph: its latency ratio ({', '.join(f'batch {b}: {r:.2f}' for b, r in slower.items())}) "
                f"is not an int8 effect."] if slower else []
    if not facts.get("int8_ops") and not facts.get("float_ops"):
        return []
    from ._quant.explain import explain_slowdown

    measured = {b: r for b, r in result.latency_ratio.items() if b in slower or r <= 1.0}  # not "no difference"
    return explain_slowdown(measured, facts, result.threads, result.streams)


__all__ = ["Config", "apply", "explain", "SEARCH_SPACE"]
