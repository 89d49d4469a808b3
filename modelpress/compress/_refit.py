"""Label-free recovery by re-fitting layers to the uncompressed model: after channel pruning (the layers that
lost input channels) and low-rank factorization (the last factor of each split layer).

Each such convolution or linear layer is re-fitted by least squares to the output the uncompressed model's
corresponding layer gives on the calibration inputs, from the inputs the compressed model now feeds it, so
the fit also absorbs what the layers before it changed (reconstruction as in ThiNet, Luo et al. 2017, and
He et al. 2017). The solution is ridge-regularised toward the layer's kept weights ``W0``:
``W = (X'X + lam I)^-1 (X'Y + lam W0)``, ``lam = RIDGE * mean(diag X'X)``, one system per group of a grouped
convolution. A layer with a bias has it re-fitted too; one without stays without (the pruning record then
still replays onto the original architecture). Layers are visited in the order the model runs them, each
seeing the layers re-fitted before it. No label, no gradient: calibration inputs and one linear solve per
layer.

Measured (``benchmarks/prune_real.py``, calibration inputs only): MiniLM with half of its feed-forward
neurons removed, validation cosine to fp32 0.70 -> 0.88 (two epochs of label-free distillation: 0.85);
MobileNetV2 and EfficientNet-Lite2 with 30% of their channels removed, test top-1 agreement 0.00 -> 0.03
and 0.12: a deep cut of a CNN needs more than a per-layer fit.

Convolutions whose forward pads their input themselves (TensorFlow-style "SAME" subclasses) are handled
when the padding can be reproduced and checked against the layer's own output; a layer whose computation
cannot be reproduced is left as it is and listed with the reason.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..progress import track

RIDGE = 1e-2  # lam relative to the mean diagonal of X'X
CHUNK = 8  # samples per forward pass while collecting (im2col of a wide convolution is large)
ESTIMATE_INPUTS = 128  # calibration inputs estimate_s assumes (the cost is a forward pass over them per layer)
MAX_FEATURES = 8192  # inputs per output (C_in / groups * kernel area, + bias) above which a layer is not re-fitted


Pair = tuple[str, str, "list[int] | None"]  # (layer in the compressed model, layer in the reference, kept outputs)


class _Stop(Exception):
    """Raised by a capture hook: the rest of the forward pass is not needed."""


def chunks(batches: Iterable[tuple[torch.Tensor, ...]], size: int = CHUNK) -> list[tuple[torch.Tensor, ...]]:
    """The batches' positional inputs split along the batch dimension into pieces of at most ``size``."""
    out = []
    for args in batches:
        n = len(args[0])
        out += [tuple(a[i:i + size] for a in args) for i in range(0, n, size)]
    return out


def run_order(model: nn.Module, args: tuple[torch.Tensor, ...]) -> list[str]:
    """Names of the convolution and linear layers in the order one forward pass calls them."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, a, name=name: order.append(name) if name not in order else None)
               for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return order


def capture(model: nn.Module, name: str, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output of layer ``name`` in a forward pass of ``model`` on ``args`` (stopped there)."""
    got: list[Any] = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        got.append((inputs[0], output))
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(*args)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise RuntimeError(f"layer {name} was not called")
    return got[0]


def _pads(conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> list[list[int]]:
    """Candidate zero paddings (F.pad order: left, right, top, bottom) that the layer may apply: its own
    ``padding`` as ``nn.Conv2d`` does, and TensorFlow's "SAME" split of the padding its output shape implies."""
    own = [int(p) for p in conv._reversed_padding_repeated_twice]
    same = []
    for dim in (-1, -2):  # width first, as F.pad wants
        k, s, d = conv.kernel_size[dim], conv.stride[dim], conv.dilation[dim]
        total = max((y.shape[dim] - 1) * s + d * (k - 1) + 1 - x.shape[dim], 0)
        same += [total // 2, total - total // 2]
    return [own] + ([same] if same != own else [])


def applied_padding(conv: nn.Conv2d, x: torch.Tensor, y: torch.Tensor) -> list[int] | None:
    """The padding that reproduces the layer's output ``y`` from its input ``x`` as one plain convolution
    (checked), or None when no candidate does (the layer's forward computes something else)."""
    if conv.padding_mode != "zeros":
        return None
    for pads in _pads(conv, x, y):
        with torch.no_grad():
            out = nn.functional.conv2d(nn.functional.pad(x, pads), conv.weight, conv.bias, conv.stride, 0,
                                       conv.dilation, conv.groups)
        if out.shape == y.shape and torch.allclose(out, y, rtol=1e-4, atol=1e-4 * float(y.abs().max()) + 1e-6):
            return pads
    return None


def design(layer: nn.Module, x: torch.Tensor, pads: list[int] | None) -> torch.Tensor:
    """The regression's inputs: ``[groups, rows, features]`` (the im2col columns of a convolution, a linear
    layer's input rows), with a column of ones last when the layer has a bias."""
    if isinstance(layer, nn.Linear):
        cols = x.reshape(-1, x.shape[-1])[None]
    else:
        unfolded = nn.functional.unfold(nn.functional.pad(x, pads), layer.kernel_size, layer.dilation, 0, layer.stride)
        n, _, positions = unfolded.shape
        g = layer.groups
        cols = unfolded.view(n, g, -1, positions).permute(1, 0, 3, 2).reshape(g, n * positions, -1)
    if layer.bias is not None:
        cols = torch.cat([cols, cols.new_ones(*cols.shape[:2], 1)], 2)
    return cols


def targets(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The reference output as ``[groups, rows, outputs per group]``, rows matching :func:`design`."""
    if isinstance(layer, nn.Linear):
        return y.reshape(-1, y.shape[-1])[None]
    n, c = y.shape[:2]
    g = layer.groups
    return y.reshape(n, g, c // g, -1).permute(1, 0, 3, 2).reshape(g, -1, c // g)


def current(layer: nn.Module) -> torch.Tensor:
    """The layer's weights (and bias) as ``[groups, features, outputs per group]``, as :func:`solve` returns."""
    g = getattr(layer, "groups", 1)
    w = layer.weight.detach().reshape(g, layer.weight.shape[0] // g, -1)
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach().reshape(g, -1, 1)], 2)
    return w.double().transpose(1, 2)


def solve(gram: torch.Tensor, cross: torch.Tensor, w0: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """Ridge least squares toward ``w0``, batched over groups: ``(G + lam I)^-1 (B + lam w0)``."""
    lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)[:, None, None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, cross + lam * w0)


def assign(layer: nn.Module, w: torch.Tensor) -> None:
    """Write :func:`solve`'s ``[groups, features, outputs]`` back into the layer's weight (and bias)."""
    w = w.transpose(1, 2).float()  # groups, outputs, features
    if layer.bias is not None:
        layer.bias.data = w[..., -1].reshape(layer.bias.shape).contiguous()
        w = w[..., :-1]
    layer.weight.data = w.reshape(layer.weight.shape).contiguous()


def refit_layer(model: nn.Module, reference: nn.Module, pair: Pair, pieces: list[tuple[torch.Tensor, ...]]
                ) -> str | None:
    """Re-fit one layer of ``model`` to its ``reference`` layer (``pair``); the reason when it is left as it is."""
    name, ref_name, kept = pair
    layer = model.get_submodule(name)
    gram = cross = None
    pads = None
    for i, args in enumerate(pieces):
        x, y_own = capture(model, name, args)
        y = capture(reference, ref_name, args)[1]
        if kept is not None:
            y = y[..., kept] if isinstance(layer, nn.Linear) else y[:, kept]
        if isinstance(layer, nn.Conv2d) and i == 0:
            pads = applied_padding(layer, x, y_own)
            if pads is None:
                return ("its forward does more than one zero-padded convolution (padding mode or a transform "
                        "the re-fit cannot reproduce)")
        cols = design(layer, x, pads)
        if cols.shape[-1] > MAX_FEATURES:
            return f"{cols.shape[-1]} inputs per output, more than the re-fit solves ({MAX_FEATURES})"
        if y.shape[:1] != x.shape[:1] or targets(layer, y).shape[1] != cols.shape[1]:
            return "its output does not line up with the unpruned layer's"
        g, b = cols.transpose(1, 2) @ cols, cols.transpose(1, 2) @ targets(layer, y)
        gram = g.double() if gram is None else gram + g.double()
        cross = b.double() if cross is None else cross + b.double()
    assign(layer, solve(gram, cross, current(layer)))
    return None


def refit(model: nn.Module, reference: nn.Module, pairs: list[Pair], batches: Iterable[tuple[torch.Tensor, ...]],
          description: str = "re-fitting layers") -> dict[str, Any]:
    """Re-fit, in place, the layers of ``model`` named in ``pairs`` (layer, reference layer, the reference's
    outputs it keeps or None) to ``reference`` on ``batches`` of positional inputs, in the order ``model``
    runs them. Returns the facts: the layers re-fitted, those left (with the reason), the inputs used and
    the seconds taken."""
    start = time.perf_counter()
    pieces = chunks(batches)
    by_name = {p[0]: p for p in pairs}
    order = [n for n in run_order(model, pieces[0]) if n in by_name]
    skipped: dict[str, str] = {n: "not run by the model on the calibration inputs" for n in by_name if n not in order}
    was = model.training, reference.training
    model.eval(), reference.eval()
    try:
        for name in track(order, description):
            reason = refit_layer(model, reference, by_name[name], pieces)
            if reason:
                skipped[name] = reason
    finally:
        model.train(was[0]), reference.train(was[1])
    facts: dict[str, Any] = {"layers": len(by_name) - len(skipped), "inputs": sum(len(p[0]) for p in pieces),
                             "seconds": round(time.perf_counter() - start, 1)}
    if skipped:
        facts["skipped"] = skipped
    return facts


def estimate_s(profile: Any) -> float:
    """Seconds :func:`checked` is expected to take on a model of ``profile`` (``search.cost.Profile``): for each
    layer (all of them, at most), about one forward pass over the calibration inputs (both models, to that
    layer), and three validation scorings."""
    return profile.layers * profile.forward_s(ESTIMATE_INPUTS) + 3 * profile.forward_s(profile.val_samples)


def pruned_pairs(cuts: list[dict[str, Any]]) -> list[Pair]:
    """The layers channel pruning's ``cuts`` took input channels from, each paired with itself in the unpruned
    model and the output channels it kept (None when all)."""
    kept = {c["layer"]: list(c["kept"]) for c in cuts if c.get("axis") == "out"}
    return [(c["layer"], c["layer"], kept.get(c["layer"])) for c in cuts if c.get("axis") == "in"]


def checked(model: nn.Module, reference: nn.Module, pairs: list[Pair], task: Any, description: str
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`refit` on the task's calibration inputs, kept unless it lowers the validation score (then the
    weights go back). Returns the re-fit's facts (``kept`` added) and the ``recovery`` facts (validation score
    of the uncompressed model, before and after, the share of the loss regained)."""
    import copy

    from .distill import RECOVERY_SAMPLES, validation_score
    from ..train import split_batch

    val = task.val_data.take(RECOVERY_SAMPLES) if hasattr(task.val_data, "take") else task.val_data
    batches = [tuple(torch.from_numpy(split_batch(b)[0][n]) for n in task.input_names) for b in task.calib_data]
    saved = copy.deepcopy(model.state_dict())
    before = validation_score(model, task, val)
    facts = refit(model, reference, pairs, batches, description)
    after = validation_score(model, task, val)
    teacher = validation_score(reference, task, val)
    lost, left = task.score_drop(teacher, before), task.score_drop(teacher, after)
    facts["kept"] = left <= lost
    if not facts["kept"]:  # worse on validation than without: undo
        model.load_state_dict(saved)
    recovery = {"on": "validation", "by": "refit", "samples": getattr(val, "num_samples", None),
                "score_teacher": round(teacher, 6), "score_before": round(before, 6),
                "score_after": round(after if facts["kept"] else before, 6),
                "regained": round((lost - min(left, lost)) / lost, 4) if lost > 1e-9 else None,
                "data": "calib", "labels": False, "inputs": facts["inputs"]}
    return facts, recovery


def notes(facts: dict[str, Any], key: str, step: str, change: str) -> list[str]:
    """The result's note on a re-fit whose facts are ``facts[key]`` (``step``: the technique, ``change``: what
    it did to the model, e.g. "the cuts"): what it regained, or why its weights were not kept."""
    fit, rec = facts.get(key) or {}, facts.get("recovery") or {}
    if rec.get("by") != "refit" or not fit:
        return []
    scores = (f"validation score {rec['score_before']:.4f} after {change}, teacher {rec['score_teacher']:.4f}; "
              f"{fit.get('layers', 0)} layers fitted on {rec['inputs']} unlabelled calibration inputs in {fit.get('seconds', 0):g} s")
    if not fit.get("kept", True):
        return [f"{step}: re-fitting the changed layers to the uncompressed model lowered the validation score "
                f"({scores}), so their weights were kept as they were (refit: false skips it)."]
    if rec["regained"] is None:
        return []
    more = " Less than half: distill (data: augmented, labels: false) or compress less." if rec["regained"] < 0.5 else ""
    return [f"{step}: re-fitting the changed layers to the uncompressed model regained {rec['regained']:.0%} of the "
            f"score {change} lost (to {rec['score_after']:.4f}; {scores}).{more}"]
