"""Export to OpenVINO IR (``model.xml`` + ``model.bin``), optionally quantized to int8 with NNCF.

The IR is converted from the ONNX export (dynamic batch axis, the task's input and output names);
where ONNX export or its conversion fails, from ``torch.export`` output instead (the names and the
dynamic batch axis are set on the converted model). Weights are stored in fp32 unless
``compress_to_fp16``; the compute precision is the runtime's choice (its precision hint).

``int8`` runs NNCF post-training quantization calibrated on ``task.calib_data``. SmoothQuant is off
by default (``smooth_quant: true`` turns it on); ``parity`` in the result shows what it does to the
agreement with fp32.
"""
from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .. import artifact
from ..config import check
from ..errors import ModelpressError
from ..task import Task
from .executorch import conversion_error, export_program, first_line, require

FORMAT = "openvino"
FILE = "model.xml"
WEIGHTS = "model.bin"
EXTRA = "openvino"
LOWERS_ONNX_REWRITES = True  # techniques' ONNX rewrites are applied before conversion
ALTERNATIVES = "export format 'onnx' (runtime 'onnxruntime') or 'torch'"


@dataclass(frozen=True)
class Config:
    source: Literal["auto", "onnx", "torch_export"] = "auto"  # auto: ONNX first, torch.export if that fails
    int8: bool = False  # NNCF post-training int8, calibrated on task.calib_data
    preset: Literal["performance", "mixed"] = "performance"  # mixed: asymmetric activations
    smooth_quant: bool = False  # NNCF's transformer mode with SmoothQuant (see the module docstring)
    calib_samples: int = 300
    compress_to_fp16: bool = False  # store weights in fp16 (half the size; compute precision unchanged)

    def __post_init__(self) -> None:
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}.")


def from_onnx(model: Any, task: Task, rewrites: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """The OpenVINO model converted from the ONNX export after ``rewrites`` (a QDQ graph becomes int8 IR),
    and the rewrites' facts."""
    import openvino as ov

    from .onnx import lower, to_onnx

    proto, facts = lower(to_onnx(model, task), rewrites, task)
    return ov.convert_model(io.BytesIO(proto.SerializeToString())), facts


def from_torch_export(model: Any, task: Task) -> Any:
    import openvino as ov

    program = export_program(model, task, None, "OpenVINO")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            converted = ov.convert_model(program)
        except Exception as e:
            raise conversion_error("OpenVINO", e, [program, program.run_decompositions()], ALTERNATIVES) from None
    # torch.export output has anonymous, fully dynamic inputs: give them the task's names and shapes
    example = task.example_inputs(1)
    converted.reshape({converted.inputs[i]: ov.PartialShape([-1, *a.shape[1:]])
                       for i, a in enumerate(example.values())})
    for port, name in zip(converted.inputs, task.input_names):
        port.get_tensor().set_names({name})
    for port, name in zip(converted.outputs, task.output_names):
        port.get_tensor().set_names({name})
    return converted


def convert(model: Any, task: Task, config: Config, rewrites: Sequence[Any] = ()) -> tuple[Any, str, dict[str, Any]]:
    """(OpenVINO model, the route that produced it, the rewrites' facts). ONNX rewrites need the ONNX route."""
    if config.source in ("auto", "onnx") or rewrites:
        try:
            ov_model, facts = from_onnx(model, task, rewrites)
            return ov_model, "onnx", facts
        except ModelpressError:
            if rewrites or config.source == "onnx":
                raise  # a rewrite's own error (e.g. the opset it needs), or the route the recipe asked for
            # source auto: the model does not export to ONNX; torch.export below may still convert it
        except Exception as e:
            if rewrites:
                raise ModelpressError(
                    f"OpenVINO cannot convert the rewritten (quantized) ONNX graph: {first_line(e)}. Export with "
                    f"format 'onnx' (runtime 'onnxruntime'), or drop the quantize step and use the export option "
                    f"int8: true (NNCF)."
                ) from None
            if config.source == "onnx":
                raise ModelpressError(
                    f"OpenVINO conversion from ONNX failed: {first_line(e)}. Set export option "
                    f"'source: torch_export' to convert from torch.export instead, or choose {ALTERNATIVES}."
                ) from None
    return from_torch_export(model, task), "torch_export", {}


def quantize(ov_model: Any, task: Task, config: Config) -> Any:
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    names = [p.get_any_name() for p in ov_model.inputs]
    items = [batch[0] if isinstance(batch, tuple) else batch for batch in task.calib_data]
    if not items:
        raise ModelpressError("OpenVINO int8 needs calibration inputs, but the task's calib_data is empty.")
    dataset = nncf.Dataset(items, lambda b: {n: b[t] for n, t in zip(names, task.input_names)})
    kwargs: dict[str, Any] = {}
    if config.smooth_quant:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    preset = nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from ..doctor import int8_dot_product

    # Without VNNI/AMX the CPU plugin's int8 kernels add u8 x s8 pairs into int16: 7-bit weights everywhere
    # keep those sums from saturating (NNCF's overflow fix), at the cost of one bit of weight precision.
    if not int8_dot_product():
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
    n = sum(len(next(iter(b.values()))) for b in items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # subset_size counts dataset items (batches): cover calib_samples samples
        batch = max(1, n // len(items))
        return nncf.quantize(ov_model, dataset, preset=preset, subset_size=max(1, -(-config.calib_samples // batch)),
                             **kwargs)


def export(model: Any, task: Task, folder: Path, config: Config = Config(), *, rewrites: Sequence[Any] = (),
           **manifest: Any) -> artifact.Artifact:
    """Write ``model.xml``, ``model.bin`` and the manifest into ``folder``. ONNX ``rewrites`` (a quantize step's
    QDQ graph) are applied before conversion, so OpenVINO runs them on its int8 kernels."""
    require("openvino", EXTRA, "The OpenVINO exporter")
    import openvino as ov

    if rewrites and config.int8:
        raise ModelpressError("The recipe quantizes twice: a quantize step (its int8 graph) and the OpenVINO export "
                              "option int8: true (NNCF). Keep one: remove the quantize step or set int8: false.")
    ov_model, route, facts = convert(model, task, config, rewrites)
    if facts:
        manifest["facts"] = {**manifest.get("facts", {}), **facts}
    if config.int8:
        require("nncf", EXTRA, "OpenVINO int8 export")
        ov_model = quantize(ov_model, task, config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".openvino-") as tmp:
        ov.save_model(ov_model, str(Path(tmp) / FILE), compress_to_fp16=config.compress_to_fp16)
        for name in (WEIGHTS, FILE):  # the xml last: a complete xml implies complete weights
            shutil.move(str(Path(tmp) / name), str(folder / name))
    return artifact.write_for_task(folder, FILE, FORMAT, task, extra_files=(WEIGHTS,), source=route,
                                   precision="int8" if config.int8 or rewrites else "fp32", **manifest)
