"""Export to OpenVINO IR (``model.xml`` + ``model.bin``), optionally quantized to int8 with NNCF.

The IR is converted from the ONNX export (dynamic batch axis, the task's input and output names);
where ONNX export or its conversion fails, from ``torch.export`` output instead (the names and the
dynamic batch axis are set on the converted model). Weights are stored in fp32 unless
``compress_to_fp16``; the compute precision is the runtime's choice (its precision hint).

``int8: true`` runs NNCF post-training quantization (weights and activations) calibrated on
``task.calib_data``, with NNCF's model type chosen by ``model_type``: ``auto`` (the default) picks
``transformer`` when the model has attention (a torch ``nn.MultiheadAttention``, a module with
``num_heads``/``num_attention_heads``, or in the converted IR a ScaledDotProductAttention op or a Softmax
over a MatMul of two activations) and ``default`` otherwise. NNCF's transformer type keeps the attention's
activation products and Softmax in float and applies SmoothQuant (``smooth_quant: false`` turns that
off); its default type quantizes them too, which all-MiniLM-L6-v2 does not survive (mean cosine 0.61 to
fp32). ``int8: weights`` compresses the weights only (``nncf.compress_weights``, INT8_ASYM: per-channel
u8 with zero points); activations stay float, no calibration. ``keep_float`` (module-name patterns, as
``quantize.exclude``) leaves those layers in float (NNCF's ignored scope): on all-MiniLM-L6-v2 the six
feed-forward output layers (``model.encoder.layer.?.output.dense``, whose inputs carry GELU's outliers) in
float take the test cosine from 0.9976 to 0.9991, at 0.38x instead of 0.31x fp32 at batch 16 when the
runtime computes those layers in bf16 (0.52x in f32).

Before the IR is written, the int8 IR and the fp32 IR run on the first ``fidelity_batches`` validation
batches (``task.val_data``); when the worst output's fidelity (top-1 agreement for class scores on the samples
the fp32 model decides, cosine otherwise: ``result.worst_fidelity``) is below ``constraints.MIN_FIDELITY`` the
outputs collapsed. With
``model_type: auto``, NNCF is run again with the other model type and the better IR kept; a collapse that
remains fails with the cause and the fix (``on_collapse: keep`` writes the IR anyway with the message as
the fact ``openvino_int8_note``). What was chosen and why is the manifest fact ``openvino_int8``.
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
from ._attention import attention_in_graph, attention_in_model
from ._openvino_check import check_fidelity, collapse_message
from .executorch import conversion_error, export_program, first_line, require

FORMAT = "openvino"
FILE = "model.xml"
WEIGHTS = "model.bin"
EXTRA = "openvino"
PACKAGE = "openvino"  # what export() needs (the search checks it with find_spec)
LOWERS_ONNX_REWRITES = True  # techniques' ONNX rewrites are applied before conversion
ALTERNATIVES = "export format 'onnx' (runtime 'onnxruntime') or 'torch'"


@dataclass(frozen=True)
class Config:
    source: Literal["auto", "onnx", "torch_export"] = "auto"  # auto: ONNX first, torch.export if that fails
    # true: NNCF post-training int8 (weights and activations), calibrated on task.calib_data;
    # weights: weight-only int8 (nncf.compress_weights INT8_ASYM), activations stay float
    int8: Literal[False, True, "weights"] = False
    model_type: Literal["auto", "transformer", "default"] = "auto"  # NNCF's model type; auto: transformer if attention
    preset: Literal["performance", "mixed"] = "performance"  # mixed: asymmetric activations
    smooth_quant: bool | None = None  # transformer type only: None = NNCF's default (on); true forces transformer
    # int8: true: layers (fnmatch patterns of torch module names, as quantize.exclude) NNCF leaves in float
    # (its ignored scope): the layers whose activations int8 does not represent
    keep_float: tuple[str, ...] = ()
    calib_samples: int = 300
    fidelity_batches: int = 4  # validation batches the int8 IR is checked on against the fp32 IR; 0: no check
    on_collapse: Literal["fail", "keep"] = "fail"  # keep: write a collapsed int8 IR anyway, with a note
    compress_to_fp16: bool = False  # store weights in fp16 (half the size; compute precision unchanged)

    def __post_init__(self) -> None:
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}.")
        check(self.fidelity_batches >= 0, f"fidelity_batches must be at least 0 (0: no check), got "
                                          f"{self.fidelity_batches}.")
        check(not (self.smooth_quant is not None and self.model_type == "default"),
              "smooth_quant applies to NNCF's transformer model type only; with model_type: default remove it, "
              "or set model_type: transformer (or auto).")
        check(not self.keep_float or self.int8 is not False,
              "keep_float names layers NNCF's int8 quantization leaves in float; without int8: true there is none. "
              "Remove keep_float, or set int8: true.")
        if self.int8 == "weights":
            ignored = [f"{k}: {v}" for k, v, unset in (("model_type", self.model_type, "auto"),
                                                     ("preset", self.preset, "performance"),
                                                     ("smooth_quant", self.smooth_quant, None),
                                                     ("keep_float", self.keep_float, ())) if v != unset]
            check(not ignored, f"int8: weights compresses the weights only (no activation quantization, no "
                               f"calibration): {', '.join(ignored)} would do nothing. Remove it, or use int8: true.")


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


def choose_model_type(model: Any, ov_model: Any, config: Config) -> tuple[str, str]:
    """(NNCF model type, why) for ``int8: true``."""
    if config.model_type != "auto":
        return config.model_type, f"model_type: {config.model_type} in the export options"
    if config.smooth_quant:
        return "transformer", "smooth_quant: true in the export options"
    why = attention_in_model(model) or attention_in_graph(ov_model)
    if why:
        return "transformer", f"model_type auto: {why}"
    return "default", ("model_type auto: no attention found (no nn.MultiheadAttention or module with "
                       "num_heads/num_attention_heads, no ScaledDotProductAttention or Softmax over a MatMul of "
                       "two activations in the IR)")


def _dataset(ov_model: Any, task: Task) -> tuple[Any, list[Any]]:
    import nncf

    names = [p.get_any_name() for p in ov_model.inputs]
    items = [batch[0] if isinstance(batch, tuple) else batch for batch in task.calib_data]
    if not items:
        raise ModelpressError("OpenVINO int8 needs calibration inputs, but the task's calib_data is empty.")
    return nncf.Dataset(items, lambda b: {n: b[t] for n, t in zip(names, task.input_names)}), items


def kept_float(model: Any, ov_model: Any, patterns: Sequence[str]) -> dict[str, str]:
    """IR op name -> torch module name of the IR's weighted ops (MatMul, Convolution) whose module (the longest
    scope of the op's name that names a module of ``model``: ``onnxgraph.module_name``) matches one of
    ``patterns``; a pattern that matches none fails with the layers there are."""
    from fnmatch import fnmatch

    from ..onnxgraph import module_name

    known = {n for n, _ in model.named_modules() if n}
    ops = {op.get_friendly_name(): module_name(op.get_friendly_name(), known) for op in ov_model.get_ordered_ops()
           if op.get_type_name() in ("MatMul", "Convolution", "GroupConvolution")}
    ops = {op: m for op, m in ops.items() if m}
    for pattern in patterns:
        if not any(fnmatch(m, pattern) for m in ops.values()):
            layers = sorted(set(ops.values()))
            raise ModelpressError(f"keep_float pattern '{pattern}' matches no layer with weights in the converted "
                                  f"model. Its layers: {', '.join(layers[:12])}{', ...' if len(layers) > 12 else ''}.")
    return {op: m for op, m in ops.items() if any(fnmatch(m, p) for p in patterns)}


def quantize(ov_model: Any, task: Task, config: Config, model_type: str = "default",
             ignored: Sequence[str] = ()) -> Any:
    """NNCF post-training int8 of ``ov_model`` (weights and activations) with NNCF's ``model_type``, leaving the
    ops named in ``ignored`` in float."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       AdvancedSmoothQuantParameters, OverflowFix)

    from ..doctor import int8_dot_product

    nncf.set_log_level(logging.ERROR)
    dataset, items = _dataset(ov_model, task)
    kwargs: dict[str, Any] = {}
    advanced: dict[str, Any] = {}
    if model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if config.smooth_quant is False:
            advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(convolution=-1, matmul=-1)
    preset = nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    # Without VNNI/AMX the CPU plugin's int8 kernels add u8 x s8 pairs into int16: 7-bit weights everywhere
    # keep those sums from saturating (NNCF's overflow fix), at the cost of one bit of weight precision.
    if not int8_dot_product():
        advanced["overflow_fix"] = OverflowFix.ENABLE
    if advanced:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    if ignored:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(ignored))
    n = sum(len(next(iter(b.values()))) for b in items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # subset_size counts dataset items (batches): cover calib_samples samples
        batch = max(1, n // len(items))
        return nncf.quantize(ov_model, dataset, preset=preset, subset_size=max(1, -(-config.calib_samples // batch)),
                             **kwargs)


def compress_weights(ov_model: Any) -> Any:
    """NNCF weight-only int8 (INT8_ASYM: per-output-channel u8 with a zero point); activations stay float."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM)


def to_int8(model: Any, ov_model: Any, task: Task, config: Config) -> tuple[Any, dict[str, Any]]:
    """The int8 IR and the fact ``openvino_int8``: mode, model type and why, the validation check, a retry.

    With ``model_type: auto`` (and no ``smooth_quant: true``, which asks for the transformer type) a collapsed
    IR is quantized again with the other model type, and the better of the two is kept."""
    from ..constraints import MIN_FIDELITY

    fp32 = ov_model.clone() if config.fidelity_batches else None
    kept = kept_float(model, ov_model, config.keep_float) if config.keep_float else {}
    if config.int8 == "weights":
        mode, model_type, why = "weights", None, "int8: weights (nncf.compress_weights, INT8_ASYM)"
        int8 = compress_weights(ov_model)
    else:
        mode = "quantize"
        model_type, why = choose_model_type(model, ov_model, config)
        int8 = quantize(ov_model.clone() if fp32 is not None else ov_model, task, config, model_type, list(kept))
    fact: dict[str, Any] = {"mode": mode, "model_type": model_type, "why": why}
    if kept:
        fact["kept_float"] = sorted(set(kept.values()))
    if mode == "quantize":
        from ..doctor import int8_dot_product

        fact["smooth_quant"] = model_type == "transformer" and config.smooth_quant is not False
        fact["overflow_fix"] = not int8_dot_product()
    if fp32 is None:
        return int8, {"openvino_int8": fact}
    fidelity = check_fidelity(fp32, int8, task, config.fidelity_batches)
    tried = [model_type] if model_type else []
    if fidelity["worst"] < MIN_FIDELITY and mode == "quantize" and config.model_type == "auto" \
            and not config.smooth_quant:
        other = "transformer" if model_type == "default" else "default"
        retry = quantize(fp32.clone(), task, config, other, list(kept))
        again = check_fidelity(fp32, retry, task, config.fidelity_batches)
        tried.append(other)
        fact["retried"] = (f"model_type {model_type} collapsed ({fidelity['measure']} {fidelity['worst']:.3f} on "
                           f"validation); {other} gave {again['worst']:.3f}")
        if again["worst"] > fidelity["worst"]:
            int8, fidelity, first, model_type = retry, again, model_type, other
            fact.update(model_type=other, smooth_quant=other == "transformer" and config.smooth_quant is not False,
                        why=f"{why}; retried as {other} after {first} collapsed")
    fact["fidelity_check"] = fidelity
    facts: dict[str, Any] = {"openvino_int8": fact}
    if fidelity["worst"] < MIN_FIDELITY:
        attention = bool(attention_in_model(model) or attention_in_graph(fp32))  # what the cause can name
        message = collapse_message(mode, model_type, fidelity, MIN_FIDELITY, tried, attention)
        if config.on_collapse == "fail":
            raise ModelpressError(message)
        facts["openvino_int8_note"] = message
    return int8, facts


def export(model: Any, task: Task, folder: Path, config: Config = Config(), *, rewrites: Sequence[Any] = (),
           **manifest: Any) -> artifact.Artifact:
    """Write ``model.xml``, ``model.bin`` and the manifest into ``folder``. ONNX ``rewrites`` (a quantize step's
    QDQ graph) are applied before conversion, so OpenVINO runs them on its int8 kernels."""
    require(PACKAGE, EXTRA, "The OpenVINO exporter")
    import openvino as ov

    if rewrites and config.int8:
        raise ModelpressError("The recipe quantizes twice: a quantize step (its int8 graph) and the OpenVINO export "
                              "option int8: true (NNCF). Keep one: remove the quantize step or set int8: false.")
    ov_model, route, facts = convert(model, task, config, rewrites)
    if facts:
        manifest["facts"] = {**manifest.get("facts", {}), **facts}
    if config.int8:
        require("nncf", EXTRA, "OpenVINO int8 export")
        ov_model, int8_facts = to_int8(model, ov_model, task, config)
        manifest["facts"] = {**manifest.get("facts", {}), **int8_facts}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".openvino-") as tmp:
        ov.save_model(ov_model, str(Path(tmp) / FILE), compress_to_fp16=config.compress_to_fp16)
        for name in (WEIGHTS, FILE):  # the xml last: a complete xml implies complete weights
            shutil.move(str(Path(tmp) / name), str(folder / name))
    precision = "int8-weights" if config.int8 == "weights" else "int8" if config.int8 or rewrites else "fp32"
    return artifact.write_for_task(folder, FILE, FORMAT, task, extra_files=(WEIGHTS,), source=route,
                                   precision=precision, **manifest)
