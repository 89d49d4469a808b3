"""ONNX Runtime on an NVIDIA GPU with the CUDA execution provider (``pip install modelpress[gpu]``).

The model runs in its own precision (fp32, or int8 QDQ); for fp16 use the ``tensorrt`` runtime or
``torch_cuda``. The session always runs on the GPU, whatever ``RuntimeConfig.device`` says. ONNX Runtime
silently falls back to the CPU when a provider cannot start; this module refuses that instead, so a
number measured here is a GPU number.
"""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from typing import Any

from ..errors import ConfigError, RuntimeUnavailable
from . import RuntimeConfig
from .onnxruntime import OrtSession

FORMATS = ("onnx",)
EXTRA = "gpu"
DEVICE = "cuda"  # where it runs, whatever RuntimeConfig.device says (energy: NVML, not RAPL)
PROVIDER = "CUDAExecutionProvider"


@lru_cache(maxsize=1)
def gpu_names() -> tuple[str, ...]:
    """NVIDIA GPUs that nvidia-smi lists (empty without a driver)."""
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(line.strip() for line in out.stdout.splitlines() if line.strip())


def provider_reason(provider: str) -> str:
    """Why ``provider`` cannot run here ('' when it can)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed; install the GPU build with 'pip install modelpress[gpu]'."
    if provider not in ort.get_available_providers():
        return (f"this onnxruntime build has no {provider}; install the GPU build (onnxruntime-gpu) with "
                f"'pip install modelpress[gpu]'.")
    if not gpu_names():
        return "no NVIDIA GPU is visible (nvidia-smi is missing or lists none)."
    return ""


def available() -> bool:
    return not provider_reason(PROVIDER)


def why_unavailable() -> str:
    return provider_reason(PROVIDER)


def open_on_gpu(artifact: Any, config: RuntimeConfig, providers: list[Any], wanted: str) -> OrtSession:
    """An ORT session whose first provider is ``wanted``; refuses a silent CPU fallback."""
    from ..export.onnx import check_model

    path = artifact.runnable_path()
    check_model(path)
    session = OrtSession(str(path), config, providers, artifact.manifest.get("inputs"))
    if wanted not in session.providers:
        raise RuntimeUnavailable(f"ONNX Runtime could not start {wanted} (it fell back to {session.providers}); "
                                 f"check the CUDA/cuDNN{'/TensorRT' if 'Tensorrt' in wanted else ''} libraries.")
    return session


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> OrtSession:
    if config.precision in ("fp16", "bf16"):
        raise ConfigError(f"The onnxruntime_cuda runtime runs the model in its own precision; precision "
                          f"'{config.precision}' needs runtime 'tensorrt' (fp16) or 'torch_cuda' (fp16, bf16).")
    return open_on_gpu(artifact, config, [(PROVIDER, {"device_id": 0}), "CPUExecutionProvider"], PROVIDER)
