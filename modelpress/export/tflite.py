"""Export to LiteRT / TFLite (``model.tflite``) with ``litert-torch``; optional PT2E static int8.

The file holds one signature per batch size in ``Config.batch_sizes`` (``batch_1``, ``batch_32``),
sharing one copy of the weights: litert-torch cannot lower a dynamic batch axis through reshapes
(the small transformer fails), and a TFLite model traced at one size cannot be resized when shapes
are baked into reshape constants. The LiteRT runtime session runs any batch by splitting it.

With ``int8`` the weights and activations are int8 (calibrated on ``task.calib_data``), and so are
the model's inputs and outputs; the runtime session quantizes inputs and dequantizes outputs with the
scales stored in the file, so callers still pass and receive float32.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import artifact
from ..config import check
from ..task import Task
from .executorch import (check_batch_sizes, conversion_error, export_program, method_name, pt2e_int8, require,
                         torch_inputs)

FORMAT = "tflite"
FILE = "model.tflite"
EXTRA = "tflite"
PACKAGE = "litert_torch"  # what export() needs (the search checks it with find_spec)
ALTERNATIVES = "export format 'onnx' (runtime 'onnxruntime'), 'openvino' or 'executorch'"


@dataclass(frozen=True)
class Config:
    batch_sizes: tuple[int, ...] = (1, 32)  # one signature per size; other sizes are split over them
    int8: bool = False  # PT2E static int8 (weights per channel, activations per tensor)
    per_channel: bool = True
    calib_samples: int = 256

    def __post_init__(self) -> None:
        check_batch_sizes(self.batch_sizes)
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}.")


@contextlib.contextmanager
def quiet_converter():
    """litert-torch prints a progress line per conversion stage; modelpress shows its own progress."""
    from litert_torch._config import config as litert_config

    before = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    litert_config.show_progress = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if before is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = before


def lowering_exists() -> Any:
    """A predicate 'litert-torch has a lowering for this op name', or None if its registry moved."""
    try:
        from litert_torch.backend import lowerings
    except ImportError:
        return None
    import torch

    def supported(name: str) -> bool:
        parts = name.split(".")
        packet = getattr(torch.ops.aten, parts[1], None) if len(parts) > 1 else None
        op = getattr(packet, parts[2] if len(parts) > 2 else "default", None) if packet is not None else None
        return op is None or lowerings.lookup(op) is not None

    return supported


def decomposed(program: Any) -> list[Any]:
    """The program after litert-torch's own decompositions (the ops it must lower), when reachable."""
    try:
        from litert_torch import fx_infra

        return [fx_infra.safe_run_decompositions(program, fx_infra.decomp.pre_convert_decomp())]
    except Exception:
        return []


def export(model: Any, task: Task, folder: Path, config: Config = Config(), **manifest: Any) -> artifact.Artifact:
    """Write ``model.tflite`` (one signature per batch size) and its manifest into ``folder``."""
    require(PACKAGE, EXTRA, "The LiteRT exporter")
    import litert_torch

    sizes = sorted(config.batch_sizes)
    source, quant_config = model.eval(), None
    with quiet_converter():
        if config.int8:
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig

            quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=config.per_channel))
            source = pt2e_int8(model, task, quantizer, config.calib_samples, "LiteRT", fold_quantize=False)
            quant_config = QuantConfig(pt2e_quantizer=quantizer)
        converter = None
        for size in sizes:
            add = litert_torch.signature if converter is None else converter.signature
            converter = add(method_name(size), source, torch_inputs(task, size))
        try:
            edge_model = converter.convert(quant_config=quant_config)
        except Exception as e:
            program = export_program(source, task, sizes[0], "LiteRT")
            # locate ops in the graph litert-torch lowers (after its decompositions), else the exported one
            raise conversion_error("LiteRT (litert-torch)", e, decomposed(program) or [program], ALTERNATIVES,
                                   lowering_exists()) from None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{FILE}.tmp"
        edge_model.export(str(tmp))
    tmp.replace(folder / FILE)
    return artifact.write_for_task(folder, FILE, FORMAT, task, batch_sizes=sizes,
                                   methods={str(b): method_name(b) for b in sizes},
                                   precision="int8" if config.int8 else "fp32", **manifest)
