"""The torch side: which layers quantize, BatchNorm folding, and the fake-quantized layer used to calibrate,
measure sensitivity and train (QAT) before the weights are written back onto their integer grid."""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from fnmatch import fnmatch
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, ModelpressError
from .._calib import make_observer
from ..quantizer import WeightSpec, act_qparams, fake_quant, fake_quant_act, fake_quant_act_dynamic, sqnr_db

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Range = tuple[float, float]


def kind(module: nn.Module) -> str:
    return "Linear" if isinstance(module, nn.Linear) else "Conv"


def select(model: nn.Module, include: tuple[str, ...], exclude: tuple[str, ...], per_channel: bool,
           types: tuple[type, ...] = LAYER_TYPES) -> dict[str, nn.Module]:
    """Eligible layers (``types``) matching ``include`` (all when empty) and not ``exclude`` (fnmatch on names)."""
    modules = dict(model.named_modules())
    eligible = {n: m for n, m in modules.items() if isinstance(m, types) and n}
    for pattern in include:
        if any(fnmatch(n, pattern) for n in eligible):
            continue
        flat = [n for n, m in modules.items() if n and fnmatch(n, pattern)
                and isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() < 2]
        if flat and per_channel:
            raise ConfigError(
                f"'quantize.per_channel' needs layers with output channels, but the include pattern '{pattern}' "
                f"matches '{flat[0]}' ({type(modules[flat[0]]).__name__}), whose weight is 1-D: no output channels. "
                f"Only Conv and Linear layers are quantized ({', '.join(eligible) or 'none in this model'}); "
                f"remove '{pattern}' from quantize.include."
            )
        raise ConfigError(
            f"The include pattern '{pattern}' in 'quantize.include' matches no quantizable layer. "
            f"Quantizable layers: {', '.join(eligible) or '(none: the model has no Conv or Linear layer)'}."
        )
    return {n: m for n, m in eligible.items()
            if (not include or any(fnmatch(n, p) for p in include)) and not any(fnmatch(n, p) for p in exclude)}


def weight_specs(layers: Mapping[str, nn.Module], config: Any) -> dict[str, WeightSpec]:
    """Each layer's weight quantizer. For the int8 modes, one scale per output channel where it pays:
    always for convolutions (QLinearConv takes per-channel scales at no cost), and for Linear layers only when
    it cuts the weight's quantization error by ``per_channel_min_gain_db`` (per-channel QGemm and
    MatMulIntegerToFloat run slower at batch 1 on ONNX Runtime 1.32, and at 8 bits a one-bit gain on a
    Linear layer did not move the score: see benchmarks/quantize.py's "static, per channel everywhere" and
    "static, per channel at 6 dB" rows; one bit = 6 dB)."""
    if config.mode == "weight_only" or not config.per_channel:
        return {n: config.weight_spec() for n in layers}
    channel, tensor = config.weight_spec(per_channel=True), config.weight_spec(per_channel=False)
    specs = {}
    for name, layer in layers.items():
        if kind(layer) == "Conv" or config.per_channel_min_gain_db == 0:
            specs[name] = channel
            continue
        w = layer.weight.detach()
        gain = sqnr_db(w, fake_quant(w, channel)) - sqnr_db(w, fake_quant(w, tensor))
        specs[name] = channel if gain >= config.per_channel_min_gain_db else tensor
    return specs


def check_weights(layers: Mapping[str, nn.Module]) -> None:
    """Refuse NaN/Inf weights, naming the layer (a quantization range of NaN would poison every value)."""
    for name, layer in layers.items():
        for pname, p in layer.named_parameters(recurse=False):
            if not torch.isfinite(p).all():
                raise ModelpressError(
                    f"The weight '{name}.{pname}' holds NaN or Inf values, so it cannot be quantized. Fix or "
                    f"retrain the model, or exclude the layer with quantize.exclude: ['{name}']."
                )


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def fold_batchnorm(model: nn.Module, example: tuple[torch.Tensor, ...]) -> list[str]:
    """Fold each BatchNorm that directly follows a convolution into it (BatchNorm becomes Identity), in place.

    Pairs are found by running ``example`` once (a BatchNorm whose input is a convolution's output tensor);
    the model's output is compared before and after, and nothing is folded unless it is unchanged.
    """
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    outputs: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, convs):
            hooks.append(m.register_forward_hook(lambda mod, inp, out, n=name: outputs.__setitem__(id(out), (n, out))))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, n=name: pairs.append((outputs[id(inp[0])][0], n)) if id(inp[0]) in outputs else None))
    try:
        with torch.no_grad():
            before = model.eval()(*example)
    finally:
        for h in hooks:
            h.remove()
    if not pairs or not isinstance(before, torch.Tensor):
        return []
    backup = copy.deepcopy(model.state_dict())
    modules = dict(model.named_modules())
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = modules[conv_name], modules[bn_name]
            factor = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(factor.reshape(-1, *[1] * (conv.weight.dim() - 1)))
            conv.bias = nn.Parameter((bias - bn.running_mean) * factor + shift)
            set_module(model, bn_name, nn.Identity())
        after = model(*example)
    if not torch.allclose(before, after, rtol=1e-3, atol=1e-4 * float(before.abs().max()) + 1e-6):
        for conv_name, bn_name in pairs:  # the conv output had other users: restore the original layers
            set_module(model, bn_name, modules[bn_name])
            if modules[conv_name].bias is not None and f"{conv_name}.bias" not in backup:
                modules[conv_name].bias = None
        model.load_state_dict(backup, strict=False)
        return []
    return [bn for _, bn in pairs]


class QuantLayer(nn.Module):
    """A Conv/Linear computing with fake-quantized weights and inputs (``act``: 'static' with calibrated
    parameters, 'dynamic' from each input's range, or None). ``enabled = False`` makes it the float layer."""

    def __init__(self, layer: nn.Module, spec: WeightSpec, act: str | None, name: str):
        super().__init__()
        self.layer, self.spec, self.act, self.name = layer, spec, act, name
        self.enabled = True
        self.observer: Any = None  # sees the inputs while calibrating
        self.out_observer: Any = None  # sees the outputs (convolutions: their output may need its own range)
        self.qparams: tuple[float, int] | None = None
        self._cache: tuple[Any, torch.Tensor] | None = None

    def weight(self) -> torch.Tensor:
        w = self.layer.weight
        if w.requires_grad and torch.is_grad_enabled():
            return fake_quant(w, self.spec)
        key = (w.data_ptr(), w._version)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, fake_quant(w.detach(), self.spec))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x.detach().float().cpu().numpy(), f"input of layer '{self.name}'")
        if not self.enabled:
            y = self.layer(x)
            if self.out_observer is not None:
                self.out_observer.update(y.detach().float().cpu().numpy(), f"output of layer '{self.name}'")
            return y
        if self.act == "static":
            x = fake_quant_act(x, *self.qparams)
        elif self.act == "dynamic":
            x = fake_quant_act_dynamic(x)
        return call_with_weight(self.layer, self.weight(), x)


def call_with_weight(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed by the layer's own forward with ``weight`` in place of its weight: a subclass
    that pads in its forward (TensorFlow "SAME" convolutions), reads its groups, stride or other attributes,
    computes exactly as it does in float, so the quantized and the float layer see the same input."""
    from torch.func import functional_call

    return functional_call(layer, {"weight": weight}, (x,), strict=False)


def wrap(model: nn.Module, layers: Mapping[str, nn.Module], specs: Mapping[str, WeightSpec],
         act: str | None) -> dict[str, QuantLayer]:
    wrapped = {}
    for name, layer in layers.items():
        wrapped[name] = QuantLayer(layer, specs[name], act, name)
        set_module(model, name, wrapped[name])
    return wrapped


def unwrap(model: nn.Module, wrapped: Mapping[str, QuantLayer], write_weights: bool) -> None:
    """Put the plain layers back; with ``write_weights`` the enabled ones keep their weights on the grid."""
    for name, q in wrapped.items():
        if write_weights and q.enabled:
            with torch.no_grad():
                q.layer.weight.copy_(fake_quant(q.layer.weight.detach(), q.spec))
        set_module(model, name, q.layer)


def write_weights(layers: Mapping[str, nn.Module], spec: WeightSpec) -> None:
    """Round each layer's weight onto its quantization grid, in place."""
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.copy_(fake_quant(layer.weight.detach(), spec))


def calibrate(model: nn.Module, wrapped: Mapping[str, QuantLayer], batches: Iterable[dict], input_names: tuple[str, ...],
              method: str, percentile: float) -> tuple[dict[str, Range], dict[str, Range]]:
    """Observe each wrapped layer's input (and a convolution's output) over ``batches`` with the float model,
    streaming; set the static activation parameters. Returns (input ranges, output ranges) by layer."""
    from ...train import forward, to_tensors

    for q in wrapped.values():
        q.observer, q.enabled = make_observer(method, percentile), False
        q.out_observer = make_observer(method, percentile) if kind(q.layer) == "Conv" else None
    count = 0
    try:
        with torch.no_grad():
            for inputs in batches:
                forward(model.eval(), to_tensors(inputs), input_names)
                count += 1
        if count == 0:
            raise empty_calibration_error()
        inputs_ = {n: q.observer.range() for n, q in wrapped.items()}
        outputs = {n: q.out_observer.range() for n, q in wrapped.items() if q.out_observer is not None}
    finally:
        for q in wrapped.values():
            q.observer, q.out_observer, q.enabled = None, None, True
    for name, q in wrapped.items():
        q.qparams = act_qparams(*inputs_[name])
    return inputs_, outputs


def batches_of(data: Iterable, max_samples: int) -> Iterable[dict]:
    """Input batches from ``data`` (batches or (inputs, target) pairs), at most ``max_samples`` samples."""
    seen = 0
    for batch in data:
        inputs = batch[0] if isinstance(batch, tuple) else batch
        if seen >= max_samples:
            break
        take = min(len(next(iter(inputs.values()))), max_samples - seen)
        yield {k: v[:take] for k, v in inputs.items()}
        seen += take


def empty_calibration_error() -> ModelpressError:
    return ModelpressError(
        "Static quantization needs calibration inputs, but the task's calib_data is empty. Give the task at "
        "least one calibration batch, or set 'quantize.mode' to 'dynamic' or 'weight_only', which need none."
    )


class KeepOnGrid:
    """Train hook: after every optimizer step of a later training step (distillation, fine-tuning), round
    the quantized layers' weights back onto their grid, so the quantization a step chose survives training.
    Finds layers by name (never by reference), so it survives deep copies."""

    def __init__(self, specs: Mapping[str, WeightSpec]):
        self.specs = dict(specs)

    def after_step(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, spec in self.specs.items():
                weight = model.get_submodule(name).weight
                weight.copy_(fake_quant(weight.detach(), spec))
