"""PyTorch eager sessions: from an in-memory module, or from a ``torch.export`` artifact (``.pt2``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelFileError
from . import RuntimeConfig, check_inputs

FORMATS = ("torch",)


def available() -> bool:
    return True


def why_unavailable() -> str:
    return ""


class TorchSession:
    def __init__(self, module: Any, input_names: tuple[str, ...], threads: int | None = None,
                 device: str = "cpu", spec: dict | None = None):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.module = module
        self.input_names = tuple(input_names)
        self.device = device
        self._spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        if self._spec:
            check_inputs(inputs, self._spec)
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                                for n in self.input_names])
        outs = out if isinstance(out, (tuple, list)) else [out]
        return [o.detach().float().cpu().numpy() for o in outs]


def from_module(module: Any, input_names: tuple[str, ...], threads: int | None = None) -> TorchSession:
    return TorchSession(module.eval(), input_names, threads)


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> TorchSession:
    import torch

    path = artifact.runnable_path()
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise ModelFileError(f"Cannot load the torch program {path}: {str(e).splitlines()[0][:300]}") from None
    spec = artifact.manifest.get("inputs", {})
    return TorchSession(program.module(), tuple(spec), config.threads, spec=spec)
