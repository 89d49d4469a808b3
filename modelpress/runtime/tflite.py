"""LiteRT / TFLite sessions with ``ai-edge-litert``'s interpreter (XNNPACK delegate, threads from the config).

One signature per compiled batch size; any batch is split over them (``FixedBatchSession``). Models
with int8 inputs/outputs are fed and read in float32: inputs are quantized and outputs dequantized
with the scale and zero point stored in the file.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..errors import ModelFileError
from . import RuntimeConfig, importable
from .executorch import FixedBatchSession, Runner, batch_methods

FORMATS = ("tflite",)
EXTRA = "tflite"
PACKAGE = "ai_edge_litert.interpreter"  # what available() imports (the search checks it with find_spec)


def available() -> bool:
    return importable(PACKAGE)


def why_unavailable() -> str:
    return "ai-edge-litert is not installed; install it with 'pip install modelpress[tflite]'."


def _index(name: str) -> int:
    """Position of a signature tensor from its name ('args_1' -> 1, 'output_0' -> 0)."""
    found = re.findall(r"(\d+)$", name)
    return int(found[0]) if found else 0


def to_model_dtype(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind in "iu" and x.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def from_model_dtype(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y


def signature_runner(runner: Any) -> Runner:
    inputs = runner.get_input_details()
    outputs = runner.get_output_details()
    in_names = sorted(inputs, key=_index)
    out_names = sorted(outputs, key=_index)

    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        result = runner(**{n: to_model_dtype(a, inputs[n]) for n, a in zip(in_names, arrays)})
        return [from_model_dtype(result[n], outputs[n]) for n in out_names]

    return run


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> FixedBatchSession:
    from ai_edge_litert.interpreter import Interpreter

    path = artifact.runnable_path()
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=config.threads)
        runners = {size: signature_runner(interpreter.get_signature_runner(name))
                   for size, name in batch_methods(artifact.manifest).items()}
    except ModelFileError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"LiteRT cannot load {path}: {first}. The file is damaged or not a TFLite model: "
                             f"re-export it.") from None
    spec = artifact.manifest.get("inputs")
    session = FixedBatchSession(runners, tuple(spec), spec)
    session.interpreter = interpreter  # the signature runners need it alive
    return session
