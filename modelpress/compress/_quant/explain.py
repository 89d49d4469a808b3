"""Why an int8 result came out slower than its fp32 baseline, in plain words, from the result's measured
latency ratios and the op precisions the runtime reported for the artifact."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def explain_slowdown(latency_ratio: Mapping[str, float], facts: Mapping[str, Any], threads: int = 1, streams: int = 1,
                     cpu_flags: Mapping[str, bool] | None = None) -> list[str]:
    """Why an int8 artifact is slower than fp32, from its latency ratios per batch size (only the measurably
    slower or faster ones) and the op precisions the runtime reported (``int8_ops``, ``float_ops``,
    ``quant_boundaries``). Empty when it is not slower.

    >>> explain_slowdown({"1": 1.3, "32": 0.6}, {"int8_ops": ["fc: QGemm"], "float_ops": [], "quant_boundaries": 2},
    ...                  cpu_flags={"avx512_vnni": True})[0][:44]
    'int8 is slower than fp32 at batch 1 (1.30x)'
    """
    ratios = {int(b): float(r) for b, r in latency_ratio.items()}
    slow = sorted(b for b, r in ratios.items() if r > 1.0)
    if not slow:
        return []
    if cpu_flags is None:
        from ...doctor import cpu_info

        cpu_flags = cpu_info()["flags"]
    int8_ops, float_ops = list(facts.get("int8_ops") or []), list(facts.get("float_ops") or [])
    boundaries = int(facts.get("quant_boundaries") or 0)
    fast = sorted(b for b, r in ratios.items() if r <= 1.0)
    out = []
    if fast and max(slow) < min(fast):
        out.append(f"int8 is slower than fp32 at batch {', '.join(map(str, slow))} "
                   f"({', '.join(f'{ratios[b]:.2f}x' for b in slow)}) but faster at batch "
                   f"{', '.join(map(str, fast))}: the batch is too small for the int8 kernels to repay the cost of "
                   f"quantizing and dequantizing activations.")
    else:
        out.append(f"int8 is slower than fp32 at batch {', '.join(map(str, slow))} "
                   f"({', '.join(f'{ratios[b]:.2f}x' for b in slow)}).")
    if not int8_ops:
        out.append("No operation runs on an int8 kernel: ONNX Runtime fused none of the quantized layers, so the "
                   "graph only added quantize/dequantize work.")
    if boundaries > max(2, len(int8_ops)):
        out.append(f"{boundaries} quantize/dequantize boundaries for {len(int8_ops)} int8 ops: QDQ islands — "
                   f"values convert between float and int8 around ops that have no int8 kernel "
                   f"({', '.join(sorted({op.split(': ')[1] for op in float_ops})[:6]) or 'none listed'}).")
    heavy = [op for op in float_ops if op.split(": ")[1] in ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")]
    if heavy:
        out.append(f"Missing int8 kernels: {len(heavy)} matrix/convolution ops still run in float "
                   f"({', '.join(heavy[:4])}{'...' if len(heavy) > 4 else ''}).")
    if any(op.split(": ")[1] == "ConvInteger" for op in int8_ops):
        out.append("ConvInteger (dynamic int8 convolution) has no fast kernel in ONNX Runtime's CPU provider; "
                   "use static quantization for convolutions.")
    if streams == 1 and threads > 1 and any(op.split(": ")[1] == "QLinearConv" for op in int8_ops):
        out.append(f"ONNX Runtime's int8 convolution (QLinearConv) splits each image across the {threads} intra-op "
                   f"threads, and on small images that synchronisation can cost more than the extra threads bring. "
                   f"Split the batch instead: runtime {{threads: {threads}, streams: {threads}}} (LeNet-5 on 2 cores: "
                   f"benchmarks/quantize.py --streams 2).")
    if not (cpu_flags.get("avx512_vnni") or cpu_flags.get("avx_vnni") or cpu_flags.get("amx_int8")):
        out.append("This CPU has no VNNI or AMX int8 dot-product instructions: int8 matrix kernels gain little over "
                   "fp32 here.")
    return out
