"""TensorRT through ONNX Runtime's TensorRT execution provider (``pip install modelpress[gpu]``).

``RuntimeConfig.precision``: ``fp32`` (TensorRT's TF32 off), ``fp16`` or ``auto`` (fp16 kernels allowed),
``int8`` (for int8 QDQ models: TensorRT takes the scales from the Q/DQ nodes). Layers TensorRT
cannot take run on the CUDA provider. Built engines are cached under ``$MODELPRESS_CACHE/tensorrt``
so a second load of the same model skips the build. Always runs on the GPU.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import RuntimeConfig
from .onnxruntime import OrtSession
from .onnxruntime_cuda import open_on_gpu, provider_reason

FORMATS = ("onnx",)
EXTRA = "gpu"
DEVICE = "cuda"  # where it runs, whatever RuntimeConfig.device says (energy: NVML, not RAPL)
PROVIDER = "TensorrtExecutionProvider"


def available() -> bool:
    return not provider_reason(PROVIDER)


def why_unavailable() -> str:
    return provider_reason(PROVIDER)


def provider_options(precision: str) -> dict[str, Any]:
    from ..cache import cache_dir

    if precision == "bf16":
        raise ConfigError("The tensorrt runtime builds fp32, fp16 or int8 engines; for bf16 use runtime 'torch_cuda'.")
    folder = cache_dir() / "tensorrt"
    folder.mkdir(parents=True, exist_ok=True)
    return {"device_id": 0, "trt_fp16_enable": precision in ("fp16", "auto"), "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder)}


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> OrtSession:
    providers = [(PROVIDER, provider_options(config.precision)), ("CUDAExecutionProvider", {"device_id": 0}),
                 "CPUExecutionProvider"]
    return open_on_gpu(artifact, config, providers, PROVIDER)
