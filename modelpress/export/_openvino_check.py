"""OpenVINO int8's fidelity check: the int8 IR against the fp32 IR on validation batches, and the message that
names a collapse's cause and fix (``export.openvino``'s ``to_int8`` uses both)."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelpressError
from ..fidelity import compare_arrays, fidelity_of, measure_of
from ..task import Task


def check_fidelity(fp32: Any, int8: Any, task: Task, batches: int) -> dict[str, Any]:
    """The int8 and fp32 IRs compared on the first ``batches`` validation batches: the worst output's fidelity,
    measured as ``evaluate.compare`` and ``result.worst_fidelity`` do (``fidelity.compare_arrays`` and
    ``fidelity_of``: top-1 agreement for class scores on the samples the fp32 IR decides, cosine otherwise).
    The f32 hint: the layers NNCF left in float compute in f32, as with the runtime's precision int8."""
    import openvino as ov

    core = ov.Core()
    compiled = [core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) for m in (fp32, int8)]
    names = [p.get_any_name() for p in compiled[0].inputs]
    outs: list[list[list[np.ndarray]]] = [[[] for _ in task.output_names] for _ in compiled]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, batch in enumerate(task.val_data):
            if i >= batches:
                break
            inputs = batch[0] if isinstance(batch, tuple) else batch
            for model, out in zip(compiled, outs):
                results = model({n: np.ascontiguousarray(inputs[t]) for n, t in zip(names, task.input_names)})
                for k in range(len(task.output_names)):
                    a = np.asarray(results[model.outputs[k]], np.float64)
                    out[k].append(a.reshape(len(a), -1))
    if not outs[0][0]:
        raise ModelpressError("OpenVINO int8 checks its outputs on the task's validation data, but val_data is "
                              "empty. Set the export option fidelity_batches: 0 to skip the check.")
    rows = []
    for name, kind, r, o in zip(task.output_names, task.output_kinds, outs[0], outs[1]):
        ref, out = np.concatenate(r), np.concatenate(o)
        row = {"split": "validation", "samples": len(ref), "output": name}
        if not np.isfinite(out).all():
            rows.append({**row, "worst": 0.0, "measure": "finite outputs (NaN or Inf found)"})
            continue
        compared = compare_arrays(ref, out, kind)
        rows.append({**row, "worst": fidelity_of(compared), "measure": measure_of(compared, "the fp32 IR"),
                     **({"decided": compared["decisive_samples"]} if kind == "logits" else {})})
    return min(rows, key=lambda row: row["worst"])


def collapse_message(mode: str, model_type: str | None, fidelity: dict[str, Any], floor: float,
                     tried: Sequence[str] = (), attention: bool = True) -> str:
    decided = f", {fidelity['decided']} of them decided" if "decided" in fidelity else ""
    seen = (f"its output '{fidelity['output']}' has {fidelity['measure']} {fidelity['worst']:.3f} to the fp32 IR on "
            f"{fidelity['samples']} validation samples{decided} (below {floor})")
    if mode == "weights":
        return (f"OpenVINO weight-only int8 (int8: weights) collapsed the model: {seen}. Cause: the weights "
                f"themselves do not survive 8 bits per channel. Fix: keep this model in fp32 (int8: false), or "
                f"compress_to_fp16: true for a smaller file.")
    fixes = ["export option int8: weights (weight-only int8: activations stay float; no speed-up from int8 "
             "kernels, a quarter of the weights' size)"]
    if "transformer" not in (model_type, *tried):
        fixes.append("model_type: transformer if the model has attention")
    fixes.append("preset: mixed (asymmetric activations)")
    if not attention:
        cause = ("per-tensor int8 activations: layers whose activation ranges differ widely between channels "
                 "(depthwise convolutions, squeeze-excite gates) lose too much in one scale per tensor")
    elif model_type == "default":
        cause = ("NNCF's default model type quantizes every activation, including attention's products, Softmax "
                 "inputs and LayerNorm outputs, whose outliers per-tensor int8 does not represent")
    else:
        cause = ("activation quantization: the layers NNCF's transformer type still quantizes have activations "
                 "(outliers) per-tensor int8 does not represent")
    also = f" (model_type {', '.join(t for t in tried if t != model_type)} did no better)" \
        if any(t != model_type for t in tried) else ""
    return (f"OpenVINO int8 (NNCF quantize, model_type {model_type}) collapsed the outputs: {seen}{also}. "
            f"Likely cause: {cause}. Fix: {'; or '.join(fixes)}. (on_collapse: keep writes this IR anyway.)")
