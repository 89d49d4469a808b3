"""PyTorch on an NVIDIA GPU: a ``torch.export`` artifact (``model.pt2``) in fp32, fp16 or bf16.

``RuntimeConfig.precision``: ``fp32`` (TF32 off, for parity), ``fp16``, ``bf16``, ``auto`` (fp16).
Float inputs are cast to that precision on the GPU; outputs come back as float32 numpy arrays.
Needs a CUDA build of torch (the ``gpu`` extra documents it); always runs on the GPU.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from . import RuntimeConfig, check_inputs

FORMATS = ("torch",)
EXTRA = "gpu"
DEVICE = "cuda"  # where it runs, whatever RuntimeConfig.device says (energy: NVML, not RAPL)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "auto": "float16"}


def available() -> bool:
    return not why_unavailable()


def why_unavailable() -> str:
    try:
        import torch
    except ImportError:
        return "torch is not installed."
    if torch.version.cuda is None:
        return (f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA build of torch "
                f"(see https://pytorch.org) and 'pip install modelpress[gpu]'.")
    if not torch.cuda.is_available():
        return "torch sees no usable NVIDIA GPU (torch.cuda.is_available() is False)."
    return ""


class TorchCudaSession:
    def __init__(self, module: Any, input_names: tuple[str, ...], dtype: Any, spec: dict | None):
        self.module = module
        self.input_names = input_names
        self.dtype = dtype
        self._spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._spec:
            check_inputs(inputs, self._spec)
        tensors = []
        for n in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[n])).to("cuda", non_blocking=True)
            tensors.append(t.to(self.dtype) if t.is_floating_point() else t)
        with torch.inference_mode():
            out = self.module(*tensors)
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.float().cpu().numpy() for o in outs]  # .cpu() waits for the GPU


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> TorchCudaSession:
    import torch

    if config.precision == "int8":
        raise ConfigError("The torch_cuda runtime runs fp32, fp16 or bf16; for int8 on a GPU use runtime 'tensorrt' "
                          "with an int8 (QDQ) ONNX artifact.")
    path = artifact.runnable_path()
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise ModelFileError(f"Cannot load the torch program {path}: {str(e).splitlines()[0][:300]}") from None
    dtype = getattr(torch, DTYPES[config.precision])
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: parity checks compare with the CPU model
    torch.backends.cudnn.allow_tf32 = False
    module = program.module().to("cuda")
    if dtype is not torch.float32:
        module = module.to(dtype)
    spec = artifact.manifest.get("inputs", {})
    return TorchCudaSession(module, tuple(spec), dtype, spec)
