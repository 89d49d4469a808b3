"""Where a model spends its size and compute: one row per layer, from one forward pass on real inputs.

Forward hooks on every module record execution order, output shapes and activation bytes; a
``TorchFunctionMode`` counts the multiply-accumulates of every convolution and matrix product and
charges them to the innermost module running (``_macs.py``). Operations a module runs in its own
``forward`` (the ``q @ k.T`` of an attention block) belong to no child, so they get a row
``<module> (own ops)``.

Units: ``macs`` are multiply-accumulates for one sample (batch 1); ``activation_bytes`` are the bytes of
a layer's outputs for one sample; ``param_bytes`` use each parameter's own dtype.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ModelpressError

CONV_TYPES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
NORM_TYPES = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm2d", "RMSNorm")


def kind_of(module: Any) -> str:
    """conv | depthwise | linear | attention | norm | embedding | other (elementwise, pooling, reshapes)."""
    name = type(module).__name__
    if name in CONV_TYPES:
        groups, cin = module.groups, module.in_channels
        return "depthwise" if groups > 1 and groups == cin else "conv"
    if name == "MultiheadAttention" or "attention" in name.lower():
        return "attention"
    if hasattr(module, "in_features") and hasattr(module, "out_features") and hasattr(module, "weight"):
        return "linear"
    if name in NORM_TYPES:
        return "norm"
    if name == "Embedding":
        return "embedding"
    return "other"


def detail(module: Any) -> str:
    """A short shape description: ``20→50 k5x5`` for a convolution, ``800→500`` for a linear layer."""
    name = type(module).__name__
    if name in CONV_TYPES:
        k = "x".join(str(s) for s in module.kernel_size)
        g = f" g{module.groups}" if module.groups > 1 else ""
        s = f" s{module.stride[0]}" if max(module.stride) > 1 else ""
        return f"{module.in_channels}→{module.out_channels} k{k}{s}{g}"
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return f"{module.in_features}→{module.out_features}"
    if hasattr(module, "num_heads"):
        return f"{module.num_heads} heads"
    return ""


def _torch_inputs(task: Any, batch_size: int = 1) -> tuple:
    import torch

    example = task.example_inputs(batch_size)
    return tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in task.input_names)


def _bytes(out: Any) -> tuple[int, list]:
    """Total bytes and shapes of the tensors in a module output (tensor, tuple, list or dict)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size(), [list(out.shape)]
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    total, shapes = 0, []
    for o in items:
        b, s = _bytes(o)
        total, shapes = total + b, shapes + s
    return total, shapes


def run_with_hooks(model: Any, inputs: tuple) -> dict[str, dict[str, Any]]:
    """Run ``model`` once; per module name: order of first call, calls, output bytes/shapes, own MACs.

    A layer that raises is named in the error (hooks keep the stack of running modules).
    """
    import torch

    from ._macs import MacCounter

    records: dict[str, dict[str, Any]] = {}
    stack: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}

    def pre(module, args):
        name = names[id(module)]
        stack.append(name)
        rec = records.setdefault(name, {"order": len(records), "calls": 0, "activation_bytes": 0, "shapes": [],
                                        "macs": 0})
        rec["calls"] += 1

    def post(module, args, out):
        name = stack.pop() if stack else names[id(module)]
        nbytes, shapes = _bytes(out)
        rec = records[name]
        rec["activation_bytes"] += nbytes
        rec["shapes"] = shapes
        rec["output"] = out

    def charge(macs: int) -> None:
        if stack:
            records[stack[-1]]["macs"] += macs

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        with torch.no_grad(), MacCounter(charge):
            output = model(*inputs)
    except Exception as e:
        layer = stack[-1] if stack else ""
        mod = dict(model.named_modules()).get(layer)
        where = f"layer '{layer}' ({type(mod).__name__})" if layer else f"the model's own forward ({type(model).__name__})"
        raise ModelpressError(
            f"The model cannot run on the task's example inputs: {where} raised {type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}. Check that the layer accepts the task's inputs "
            f"(shapes {_input_shapes(inputs)})."
        ) from None
    finally:
        for h in handles:
            h.remove()
    batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
    for rec in records.values():
        rec["macs"] //= max(1, batch)  # per sample
        out = rec.pop("output", None)
        rec["is_output"] = out is output
    return records


def _input_shapes(inputs: tuple) -> list:
    return [list(t.shape) for t in inputs]


def layer_table(model: Any, task: Any) -> dict[str, Any]:
    """The per-layer table and totals for ``model`` on the task's example inputs (batch 1).

    >>> from modelpress.zoo import LeNet5  # doctest: +SKIP
    >>> layer_table(LeNet5(), task)["totals"]["params"]  # doctest: +SKIP
    431080
    """
    model = model.eval()
    records = run_with_hooks(model, _torch_inputs(task, 1))
    modules = dict(model.named_modules())
    rows = []
    for name, rec in sorted(records.items(), key=lambda kv: kv[1]["order"]):
        module = modules[name]
        children = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
        own_params = sum(p.numel() for p in module.parameters(recurse=False))
        own_param_bytes = sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
        if not children:  # a leaf layer
            rows.append(_row(name, module, rec, rec["macs"], own_params, own_param_bytes, kind_of(module)))
            continue
        # Ops and parameters a container holds itself (attention products, a positional embedding).
        own_macs = rec["macs"]
        if own_macs > 0 or own_params > 0:
            kind = "attention" if _is_attention(module) else "other"
            row = _row(name, module, rec, max(own_macs, 0), own_params, own_param_bytes, kind)
            row["name"] = f"{name or '(model)'} (own ops)"
            row["module"] = name
            row["activation_bytes"] = 0  # its outputs are its children's or its parent's
            row["is_output"] = False
            rows.append(row)
    blocks = [n for n, m in modules.items() if n and _is_attention(m)]
    for r in rows:  # linear layers inside an attention block are its projections
        r["in_attention"] = r["kind"] == "linear" and any(r["module"].startswith(b + ".") for b in blocks)
    unused = [n for n, m in modules.items() if n not in records and not list(m.children())
              and any(True for _ in m.parameters(recurse=False))]
    total_params = sum(p.numel() for p in model.parameters())
    total_param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    total_macs = sum(r["macs"] for r in rows)
    for r in rows:
        r["param_share"] = r["params"] / total_params if total_params else 0.0
        r["mac_share"] = r["macs"] / total_macs if total_macs else 0.0
    totals = {
        "params": total_params, "param_bytes": total_param_bytes, "macs": total_macs,
        "activation_bytes": sum(r["activation_bytes"] for r in rows),
        "peak_layer_activation_bytes": max((r["activation_bytes"] for r in rows), default=0),
        "buffers_bytes": sum(b.numel() * b.element_size() for b in model.buffers()),
        "layers": len(rows),
    }
    return {"rows": rows, "totals": totals, "by_kind": by_kind(rows), "unused_layers": unused, "modules": list(modules),
            "input_shapes": {n: [1, *np.asarray(v).shape[1:]] for n, v in task.example_inputs(1).items()}}


def _is_attention(module: Any) -> bool:
    return kind_of(module) == "attention" or hasattr(module, "num_heads")


def _row(name: str, module: Any, rec: dict, macs: int, params: int, param_bytes: int, kind: str) -> dict[str, Any]:
    return {"name": name or "(model)", "module": name, "type": type(module).__name__, "kind": kind,
            "detail": detail(module), "params": params, "param_bytes": param_bytes, "macs": int(macs),
            "activation_bytes": rec["activation_bytes"], "output_shapes": rec["shapes"], "calls": rec["calls"],
            "is_output": rec["is_output"], "groups": getattr(module, "groups", 1),
            "out_channels": getattr(module, "out_channels", getattr(module, "out_features", None))}


def by_kind(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Shares of parameters and MACs per layer kind (conv, depthwise, linear, attention, ...).

    Linear layers inside an attention block (a module with ``num_heads`` or 'Attention' in its class
    name) count as ``attention``; the others as ``linear``.
    """
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        k = r["kind"]
        if k == "linear" and r.get("in_attention"):
            k = "attention"
        d = out.setdefault(k, {"params": 0, "macs": 0, "param_share": 0.0, "mac_share": 0.0, "layers": 0})
        d["params"] += r["params"]
        d["macs"] += r["macs"]
        d["param_share"] += r["param_share"]
        d["mac_share"] += r["mac_share"]
        d["layers"] += 1
    return out

