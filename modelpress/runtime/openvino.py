"""OpenVINO sessions on the CPU plugin.

``RuntimeConfig.precision`` picks the inference precision hint: ``fp32`` -> f32 (the default, for
parity checks: a CPU with AVX512-BF16 or AMX would otherwise compute in bf16) and no dynamic quantization
(on a CPU with VNNI the plugin would otherwise feed int8 activations to the layers whose weights are
compressed, e.g. packed int4), ``bf16``, ``fp16`` -> f16
(refused, with the reason, on a CPU that cannot compute in it: the plugin would silently run f32),
``int8`` -> f32 for the layers NNCF left in float (the quantized layers run in int8 whatever the hint),
``auto`` -> the plugin's own choice.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelFileError, ModelpressError, RuntimeUnavailable
from . import RuntimeConfig, check_inputs, importable

FORMATS = ("openvino",)
EXTRA = "openvino"
PACKAGE = "openvino"  # what available() imports (the search checks it with find_spec)
HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16", "auto": None}
# What the search tries on this runtime when the recipe pins no runtime (``modelpress.search.runtimes``), each
# where this CPU computes in it (``cannot_compute``). int8 is not a value of its own: its hint is f32, as fp32's
# (an int8 OpenVINO model comes from the quantize technique's int8 graph or the exporter's int8 option); auto
# is the plugin's choice, bf16 on CPUs that have it and f32 elsewhere; fp16 needs AVX512-FP16 or AMX-FP16.
SEARCH_PRECISIONS = ("fp32", "bf16")


def available() -> bool:
    return importable(PACKAGE)


def why_unavailable() -> str:
    return "openvino is not installed; install it with 'pip install modelpress[openvino]'."


class OpenVINOSession:
    def __init__(self, compiled: Any, spec: dict | None):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self.input_names = tuple(p.get_any_name() for p in compiled.inputs)
        self.precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        self._spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._spec:
            check_inputs(inputs, self._spec)
        self._request.infer({n: np.ascontiguousarray(inputs[n]) for n in self.input_names})
        # the request's output buffers are reused by the next call: copy them out
        return [self._request.get_output_tensor(i).data.copy() for i in range(len(self._compiled.outputs))]


def check_precision(core: Any, precision: str) -> None:
    """Refuse a bf16/fp16 hint this CPU cannot compute in: OpenVINO would silently run f32 instead, and a
    result labelled bf16 would describe an fp32 run."""
    wanted = {"bf16": "BF16", "fp16": "FP16"}.get(precision)
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if wanted and wanted not in capabilities:
        raise RuntimeUnavailable(
            f"OpenVINO's CPU plugin cannot compute in {precision} on this CPU (its capabilities: "
            f"{', '.join(capabilities)}); {precision} needs "
            f"{'AVX512-BF16 or AMX' if precision == 'bf16' else 'AVX512-FP16 or AMX-FP16'}. Use precision fp32.")


def cannot_compute(precision: str) -> str | None:
    """Why this CPU has no instructions for ``precision`` (None when it has them), from /proc/cpuinfo's flags
    without importing OpenVINO: bf16 needs avx512_bf16 or amx_bf16 (``check_precision`` refuses it otherwise)."""
    from .. import doctor

    if precision == "bf16" and not doctor.bf16_compute():
        return "this CPU has neither avx512_bf16 nor amx_bf16, so OpenVINO cannot compute in bf16 here"
    return None


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> OpenVINOSession:
    import openvino as ov

    path = artifact.runnable_path()
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"OpenVINO cannot read {path}: {first}. The IR is damaged: re-export it.") from None
    props: dict[str, Any] = {"INFERENCE_NUM_THREADS": config.threads, "PERFORMANCE_HINT": "LATENCY"}
    check_precision(core, config.precision)
    if HINTS[config.precision]:
        props["INFERENCE_PRECISION_HINT"] = HINTS[config.precision]
    if config.precision == "fp32":
        props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
    try:
        compiled = core.compile_model(model, "CPU", props)
    except Exception as e:
        raise ModelpressError(
            f"OpenVINO cannot compile the model for the CPU with precision '{config.precision}': "
            f"{str(e).strip().splitlines()[-1][:300] if str(e).strip() else type(e).__name__}. "
            f"Use precision fp32 or auto."
        ) from None
    return OpenVINOSession(compiled, artifact.manifest.get("inputs"))
