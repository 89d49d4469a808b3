"""What this machine offers: installed runtimes and versions, CPU ISA flags for int8/bf16, GPUs, energy."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni")
DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "torch": ("torch",),
                 "openvino": ("openvino",), "tflite": ("ai-edge-litert",), "executorch": ("executorch",),
                 "tensorrt": ("onnxruntime-gpu", "tensorrt"), "torch_cuda": ("torch",), "onnxruntime_cuda": ("onnxruntime-gpu",)}


def cpu_info() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 platform.processor() or platform.machine())
    flags_line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(flags_line.split(":", 1)[-1].split())
    return {"model": model, "cores": os.cpu_count(), "flags": {f: f in present for f in FLAGS}}


def int8_dot_product() -> bool:
    """Whether this CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8). Without one,
    int8 kernels add u8 x s8 products in pairs into int16 (AVX2 ``vpmaddubsw``), which full-range weights
    can saturate."""
    flags = cpu_info()["flags"]
    return bool(flags.get("avx512_vnni") or flags.get("avx_vnni") or flags.get("amx_int8"))


def bf16_compute() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16): OpenVINO's bf16 hint needs it."""
    flags = cpu_info()["flags"]
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))


def gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]


def version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def report() -> dict[str, Any]:
    from . import registry
    from .energy import EnergyMeter

    runtimes = []
    for name in registry.RUNTIMES:
        mod = registry.module("runtime", name)
        ok = mod.available()
        runtimes.append({"name": name, "available": ok, "version": version(DISTRIBUTIONS.get(name, (name,))),
                         "note": "" if ok else mod.why_unavailable()})
    meters = {"cpu": ("RAPL", EnergyMeter("cpu")), "cuda": ("NVML", EnergyMeter("cuda"))}
    energy = {device: name if m.available else f"unavailable ({m.why})" for device, (name, m) in meters.items()}
    return {"runtimes": runtimes, "cpu": cpu_info(), "gpus": gpus(), "energy": energy}
