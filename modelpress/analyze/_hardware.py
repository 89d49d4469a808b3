"""Runtime and precision for the detected hardware (``modelpress.doctor``: CPU ISA flags, NVIDIA GPUs).

- an NVIDIA GPU → fp16 (TensorRT, or ONNX Runtime's CUDA provider); int8 with calibration on TensorRT.
- VNNI (avx512_vnni, avx_vnni) or AMX (amx_int8) → int8 on the CPU: static (calibrated) int8 for
  convolution models, dynamic int8 for linear and attention models.
- avx512_bf16 or amx_bf16 → bf16 as the no-calibration alternative to int8.
- none of these → fp32 kernels; compression then buys size, rarely speed.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from . import _evidence as ev


def _rec(category: str, title: str, reason: str, evidence: dict[str, Any], runtime: str | None = None,
         precision: str | None = None) -> dict[str, Any]:
    return {"category": category, "title": title, "reason": reason, "evidence": evidence, "step": None,
            "runtime": runtime, "precision": precision}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def hardware_advice(hw: dict[str, Any], tags: list[str], prof1: dict | None, prof_big: dict | None,
                    facts: dict[str, Any]) -> list[dict[str, Any]]:
    flags = hw.get("flags", {})
    on = sorted(f for f, v in flags.items() if v)
    out = []
    gpus = hw.get("gpus", [])
    if gpus:
        out.append(_rec(
            "runtime", "NVIDIA GPU: fp16 on TensorRT (or ONNX Runtime's CUDA provider)",
            f"Found {', '.join(gpus)}. Its tensor cores run fp16 matrix products several times faster than fp32 "
            f"with no calibration; TensorRT fuses layers and picks kernels per shape. int8 on TensorRT needs "
            f"calibration data and pays on convolution-heavy models at larger batches.",
            {"gpus": gpus}, "tensorrt", "fp16"))
    int8 = [f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if flags.get(f)]
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if flags.get(f)]
    cpu = hw.get("model", "this CPU")
    alt = " or OpenVINO" if installed("openvino") else ""
    if int8:
        style = ("static int8 (QDQ with calibrated activation ranges): convolutions then run int8 end to end"
                 if "conv-heavy" in tags else
                 "dynamic int8 on MatMul/Gemm (int8 weights, activations quantized per batch at run time): no "
                 "calibration, and the linear products run int8")
        out.append(_rec(
            "precision", f"int8 on the CPU ({', '.join(int8)})",
            f"{cpu} has {', '.join(int8)}: int8 dot-product instructions that do 4x the multiply-adds of fp32 per "
            f"instruction. Use ONNX Runtime{alt} with {style}.",
            {"flags": on, "model_kind": tags}, "onnxruntime", "int8"))
    if bf16:
        out.append(_rec(
            "precision", f"bf16 where int8 costs too much accuracy ({', '.join(bf16)})",
            f"{cpu} has {', '.join(bf16)}: bf16 dot products at about twice the fp32 rate, with fp32's range and "
            f"no calibration. OpenVINO computes in bf16 by default on such CPUs (set INFERENCE_PRECISION_HINT to "
            f"f32 when you need bit-level parity with the source model).",
            {"flags": on}, "openvino" if installed("openvino") else "onnxruntime", "bf16"))
    if not gpus and not int8 and not bf16:
        out.append(_rec(
            "precision", "fp32 kernels: compress for size, measure before expecting speed",
            f"{cpu} has none of VNNI, AMX or avx512_bf16 ({', '.join(on) or 'no relevant flags'}): int8 runs "
            f"through emulation or conversions, so quantization shrinks the file but rarely the latency. "
            f"Structured pruning and factorization still remove MACs.",
            {"flags": on}, "onnxruntime", "fp32"))
    if prof_big and prof1 and prof_big["batch_size"] == prof1["batch_size"]:
        prof_big = None
    if prof1:
        layout = facts["time_share"].get("layout", 0.0)
        big = f"; at batch {prof_big['batch_size']} it takes {prof_big['run_us_median']:.0f} µs" if prof_big else ""
        out.append(_rec(
            "caution", "Judge speedups at the batch size you serve",
            f"At batch {prof1['batch_size']} one inference takes {prof1['run_us_median']:.0f} µs on ONNX Runtime (median under the "
            f"profiler), {ev.pct(prof1['kernel_share_of_run'] or 0)} of it in kernels and {ev.pct(layout)} of the "
            f"kernel time in layout reorders the runtime inserted{big}. Nodes added by compression (quantize/"
            f"dequantize pairs, reorders around odd channel counts) cost fixed time per inference, so on a small "
            f"model they can cancel the gain: time candidates against this baseline (modelpress run, bench).",
            {f"run_us_batch{prof1['batch_size']}": prof1["run_us_median"], "kernel_share_of_run": prof1["kernel_share_of_run"],
             "layout_time_share": round(layout, 4),
             **({f"run_us_batch{prof_big['batch_size']}": prof_big["run_us_median"]} if prof_big else {})}))
    return out
