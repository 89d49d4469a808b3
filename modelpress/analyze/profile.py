"""Where time actually goes: an op-level latency profile on ONNX Runtime, attributed to the model's layers.

ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) writes one JSON event per executed node
and run. We run the exported model with the same session options as the ``onnxruntime`` runtime
(threads, no spinning, all graph optimizations), drop the warm-up runs, and sum per node, op type and
layer. Times are microseconds per inference run (``*_us``) measured under the profiler, which adds a
little overhead per node; shares are of the summed kernel time.

ONNX Runtime fuses and renames nodes (a Conv fused with its ReLU takes the ReLU's name, ``..._nchwc``);
node names from the legacy exporter carry the module path (``/features/features.3/Conv``), so a node is
attributed to the deepest module in its name, and a fused convolution or matrix product named after a
following activation is attributed to the nearest convolution/linear layer before it.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import ModelpressError

COMPUTE_OPS = {"Conv", "FusedConv", "NchwcConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul", "MatMulInteger",
               "ConvInteger", "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "ConvTranspose"}
COMPUTE_KINDS = ("conv", "depthwise", "linear")


def export_onnx(model: Any, task: Any) -> Any:
    """The model as an ``onnx.ModelProto`` through the project's exporter; a failure names the layer."""
    from ..export.onnx import to_onnx

    try:
        with quiet():
            return to_onnx(model, task)
    except ModelpressError:
        found = locate_export_failure(model, task)
        if found is None:
            raise
        layer, type_name, reason = found
        where = f"layer '{layer}' ({type_name})" if layer else f"the model's own forward ({type_name})"
        raise ModelpressError(
            f"ONNX export fails in {where}: {reason}. That layer uses an operation the ONNX exporter cannot "
            f"express; replace it with standard torch operations, or analyze with --no-profile (the layer "
            f"table and sensitivities run in PyTorch)."
        ) from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the process's stdout and stderr (file descriptors 1 and 2): the exporter's C++ code prints
    the whole graph of a failed export there."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def locate_export_failure(model: Any, task: Any) -> tuple[str, str, str] | None:
    """(module name, class name, reason) of the deepest module that fails to export on its own inputs."""
    import torch

    from .layers import _torch_inputs

    captured: dict[str, tuple] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def pre(module, args):
        captured.setdefault(names[id(module)], args)

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*_torch_inputs(task, 2))
    except Exception:
        return None
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    order = {n: i for i, n in enumerate(captured)}
    # Deepest modules first, so the innermost culprit is named rather than the containers around it.
    for name in sorted(captured, key=lambda n: (-n.count(".") - bool(n), order[n])):
        args = captured[name]
        if not all(isinstance(a, torch.Tensor) for a in args):
            continue
        with warnings.catch_warnings(), torch.no_grad(), quiet():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(modules[name], args, io.BytesIO(), dynamo=False, opset_version=18)
            except Exception as e:
                reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                return name, type(modules[name]).__name__, f"{type(e).__name__}: {reason}"
    return None


def module_of(node_name: str, modules: set[str]) -> str | None:
    """The deepest module named in an exported node name (``/blocks/blocks.0/attn/q/MatMul`` → ``blocks.0.attn.q``).

    The legacy exporter writes one scope segment per module whose ``forward`` ran: an attribute name
    (``attn``), or for a container's child the container's segment plus the index (``ffn.0``), which for
    nested containers is the whole qualified name (``blocks.0.0``). ``""`` is the model itself.
    """
    name = node_name.removeprefix("fused ").removesuffix("_kernel_time")
    if "/" not in name:
        return None  # a node the runtime inserted (layout reorder, fused activation)
    current = ""
    for seg in (s for s in name.split("/")[:-1] if s):
        head, _, tail = seg.partition(".")
        last = current.rsplit(".", 1)[-1]
        candidates = [f"{current}.{seg}" if current else seg,
                      f"{current}.{tail}" if tail and head == last else None,
                      seg if seg.startswith(current) else None]
        found = next((c for c in candidates if c and c in modules), None)
        if found is None:  # a scope whose parents did not run forward (``self.a[1]["x"](...)``)
            deeper = [m for m in modules if m.endswith("." + seg) and m.startswith(current)]
            found = deeper[0] if len(deeper) == 1 else None
        if found is not None:
            current = found
    return current


def _attribute(node_name: str, op: str, rows: list[dict[str, Any]], modules: set[str]) -> str | None:
    module = module_of(node_name, modules)
    if module is None:
        return None
    if op in COMPUTE_OPS:
        leaf_rows = [r for r in rows if r["module"] == module and "(own ops)" not in r["name"]]
        if leaf_rows and leaf_rows[0]["kind"] not in COMPUTE_KINDS:
            # Fused into the activation that follows it: the compute layer is the one just before.
            idx = rows.index(leaf_rows[0])
            for r in reversed(rows[:idx]):
                if r["kind"] in COMPUTE_KINDS:
                    return r["module"]
    return module


def profile_onnx(proto: Any, task: Any, table: dict[str, Any], batch_sizes: tuple[int, ...] = (1, 32),
                 runs: int = 50, warmup: int = 5, threads: int = 2) -> dict[str, Any]:
    """Per batch size: per-op-type and per-node time per run, layer attribution and channel padding. The
    session is ONNX Runtime's with the ``onnxruntime`` runtime's settings for ``threads``."""
    from importlib.metadata import version

    from ..runtime import RuntimeConfig
    from ..runtime.onnxruntime import profile_events

    data = proto.SerializeToString()
    rows, modules = table["rows"], set(table["modules"])
    out: dict[str, Any] = {"runtime": f"onnxruntime {version('onnxruntime')}", "threads": threads,
                           "provider": "CPUExecutionProvider", "batches": {}}
    for bs in batch_sizes:
        inputs = {k: np.ascontiguousarray(v) for k, v in task.example_inputs(bs).items()}
        n_runs = max(5, runs if bs == 1 else runs // 3)
        events = profile_events(data, RuntimeConfig(threads=threads), inputs, warmup + n_runs)
        out["batches"][str(bs)] = summarize(events, warmup, rows, modules)
    return out


def summarize(events: list[dict[str, Any]], warmup: int, rows: list[dict[str, Any]], modules: set[str]) -> dict:
    """Sum the profiler's node events of the runs after ``warmup``, per op type, node and layer."""
    run_events = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    kept = run_events[warmup:] or run_events
    if not kept:
        raise ModelpressError("ONNX Runtime's profile has no model runs; the profiler wrote no events.")
    start = kept[0]["ts"]
    n = len(kept)
    # Per node, the median over runs: latency flips between fast and slow levels on shared machines, and
    # a mean would let a few slow runs decide the shares.
    nodes: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or e["ts"] < start or not e["name"].endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        node = nodes.setdefault(e["name"], {"node": e["name"].removesuffix("_kernel_time"),
                                            "op": args.get("op_name", "?"), "durations_us": [],
                                            "output_shape": _shape(args.get("output_type_shape"))})
        node["durations_us"].append(float(e["dur"]))
    for v in nodes.values():
        calls_per_run = max(1, round(len(v["durations_us"]) / n))
        v["us"] = float(np.median(v.pop("durations_us"))) * calls_per_run
    kernel_us = sum(v["us"] for v in nodes.values()) or 1.0
    ops: dict[str, dict[str, Any]] = {}
    layers: dict[str, float] = {}
    by_name = {r["module"]: r for r in rows if "(own ops)" not in r["name"]}
    padding = []
    node_rows = []
    for name, v in nodes.items():
        layer = _attribute(name, v["op"], rows, modules)
        us = v["us"]
        node_rows.append({"node": v["node"], "op": v["op"], "layer": layer, "us_per_run": us,
                          "share": us / kernel_us, "output_shape": v["output_shape"]})
        o = ops.setdefault(v["op"], {"op": v["op"], "us_per_run": 0.0, "share": 0.0, "nodes": 0})
        o["us_per_run"] += us
        o["share"] += us / kernel_us
        o["nodes"] += 1
        key = layer if layer is not None else "(runtime-inserted)"
        layers[key] = layers.get(key, 0.0) + us
        row = by_name.get(layer or "")
        shape = v["output_shape"]
        if (row is not None and v["op"] in COMPUTE_OPS and row["kind"] in ("conv", "depthwise") and shape
                and len(shape) >= 3 and row.get("out_channels") and shape[1] > row["out_channels"]):
            padding.append({"layer": layer, "out_channels": row["out_channels"], "runtime_channels": shape[1]})
    run_us = float(np.median([float(e["dur"]) for e in kept]))
    return {
        "runs": n, "run_us_median": run_us, "kernel_us_per_run": kernel_us,
        "kernel_share_of_run": min(1.0, kernel_us / run_us) if run_us > 0 else None,
        "ops": sorted(ops.values(), key=lambda o: -o["us_per_run"]),
        "nodes": sorted(node_rows, key=lambda r: -r["us_per_run"]),
        "layers": dict(sorted(layers.items(), key=lambda kv: -kv[1])),
        "channel_padding": padding,
    }


def _shape(value: Any) -> list[int] | None:
    """The first output shape from the profiler's ``output_type_shape`` ([{"float": [1, 32, 24, 24]}])."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        shape = next(iter(value[0].values()), None)
        if isinstance(shape, list):
            return [int(s) for s in shape]
    return None
