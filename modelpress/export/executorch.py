"""Export to ExecuTorch (``model.pte``) with the XNNPACK delegate; optional PT2E int8 (XNNPACKQuantizer).

The program holds one method per batch size in ``Config.batch_sizes`` (``batch_1``, ``batch_32``, ...),
sharing one copy of the weights. Fixed sizes, not a dynamic batch axis: with a dynamic batch the
memory planner of this ExecuTorch release bounds convolution inputs far below the requested maximum
(15 for LeNet-5 whatever the bound), and the runtime then refuses larger batches. The ExecuTorch
runtime session runs any batch size by splitting it over these methods.

This module also holds the ``torch.export`` helpers shared by the exporters that start from a
``torch.export`` program (LiteRT, and OpenVINO's fallback): canonical example tensors, capture with
a clear error, PT2E int8 calibration, and naming the op and layer a converter refuses.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import artifact
from ..config import check
from ..errors import ModelpressError, RuntimeUnavailable
from ..task import Task

FORMAT = "executorch"
FILE = "model.pte"
EXTRA = "executorch"
PACKAGE = "executorch.exir"  # what export() needs (the search checks it with find_spec)
ALTERNATIVES = "export format 'onnx' (runtime 'onnxruntime') or 'openvino'"


@dataclass(frozen=True)
class Config:
    batch_sizes: tuple[int, ...] = (1, 32)  # one method per size; other sizes are split over them
    int8: bool = False  # PT2E static int8 (XNNPACKQuantizer), calibrated on task.calib_data
    per_channel: bool = True
    calib_samples: int = 256

    def __post_init__(self) -> None:
        check_batch_sizes(self.batch_sizes)
        check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}.")


def check_batch_sizes(sizes: tuple[int, ...]) -> None:
    check(len(sizes) > 0 and all(1 <= b <= 4096 for b in sizes) and len(set(sizes)) == len(sizes),
          f"batch_sizes must be distinct whole numbers from 1 to 4096, got {list(sizes)}.")


def require(module: str, extra: str, what: str) -> None:
    """Raise RuntimeUnavailable naming the pip extra when ``module`` cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise RuntimeUnavailable(
            f"{what} needs the '{module}' package, which is not installed or does not import ({e}). "
            f"Install it with 'pip install modelpress[{extra}]'."
        ) from None


# ---- torch.export helpers shared by the LiteRT, ExecuTorch and OpenVINO exporters -------------------

def torch_inputs(task: Task, batch_size: int) -> tuple[Any, ...]:
    """Real example inputs as torch tensors with row-major strides.

    numpy gives size-1 axes arbitrary strides, so a ``[N, 1, H, W]`` slice can look channels-last to
    torch; the XNNPACK lowering then plans a channels-last layout and fails at run time.
    """
    import torch

    return tuple(torch.from_numpy(a).clone(memory_format=torch.contiguous_format)
                 for a in task.example_inputs(batch_size).values())


def export_program(model: Any, task: Task, batch_size: int | None, target: str) -> Any:
    """``torch.export`` of ``model`` at a fixed batch size, or with a dynamic batch axis (``None``)."""
    import torch

    inputs = torch_inputs(task, batch_size or 2)  # a dynamic axis must not be sampled at size 1
    dynamic = None
    if batch_size is None:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        dynamic = tuple({0: batch} for _ in inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.export.export(eval_mode(model), inputs, dynamic_shapes=dynamic)
        except Exception as e:
            raise ModelpressError(
                f"{target} export starts from torch.export, which cannot capture this model: "
                f"{type(e).__name__}: {first_line(e)}. Make the model's forward traceable (no data-dependent "
                f"Python control flow), or choose export format 'onnx'."
            ) from None


def eval_mode(model: Any) -> Any:
    """``model.eval()``; graph modules from torch.export refuse it (they are already in inference form)."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def layer_of(node: Any) -> tuple[str, str]:
    """(module path, class name) of the innermost module that emitted ``node``; ('', '') at top level."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    name = cls.__name__ if isinstance(cls, type) else str(cls).rsplit(".", 1)[-1]
    return str(path), name


def locate(programs: Iterable[Any], wanted: Callable[[str], bool]) -> list[tuple[str, str, str]]:
    """(op, layer, class) for every distinct op in ``programs`` (exported programs or graph modules)
    whose name satisfies ``wanted``."""
    found: dict[str, tuple[str, str, str]] = {}
    for program in programs:
        graph = program.graph if hasattr(program, "graph") else program.graph_module.graph
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            name = str(node.target)  # 'aten.linalg_inv_ex.default'
            if name not in found and wanted(name):
                found[name] = (name, *layer_of(node))
    return list(found.values())


def ops_in_message(message: str) -> set[str]:
    """Op names such as 'aten.linalg_inv_ex.default' or 'aten::linalg_inv' mentioned in an error."""
    names = re.findall(r"aten(?:\.|::)([A-Za-z0-9_]+)", message)
    return set(names)


def matches(names: set[str]) -> Callable[[str], bool]:
    def wanted(op: str) -> bool:
        base = op.split(".")[1] if op.startswith("aten.") and op.count(".") >= 1 else op
        return any(base == n or base.rstrip("_") == n or base.startswith(n + "_") or n.startswith(base + "_")
                   for n in names)
    return wanted


def unsupported_op_error(target: str, found: list[tuple[str, str, str]], detail: str, alternatives: str
                         ) -> ModelpressError:
    """The user-facing error for an op the target cannot convert: names op, layer and other targets."""
    if found:
        per_layer = {}  # one op per layer: the first the converter met
        for op, layer, cls in found:
            per_layer.setdefault(layer, (op, layer, cls))
        found = list(per_layer.values())
        where = "; ".join(f"'{op}' in layer '{layer or '<top-level forward>'}'" + (f" ({cls})" if cls else "")
                          for op, layer, cls in found[:5])
        head = f"{target} cannot convert the operation {where}."
    else:
        head = f"{target} conversion failed: {detail}."
    return ModelpressError(
        f"{head} Replace that layer with operations {target} supports, leave it out of the model, or choose "
        f"another target: {alternatives}."
    )


def conversion_error(target: str, e: BaseException, programs: list[Any], alternatives: str,
                     supported: Callable[[Any], bool] | None = None) -> ModelpressError:
    """Explain a converter failure: ops named in its message (or, with ``supported``, every op the
    target has no lowering for), located in ``programs``."""
    message = str(e)
    found = locate(programs, matches(ops_in_message(message))) if ops_in_message(message) else []
    if not found and supported is not None:
        found = locate(programs, lambda name: name.startswith("aten.") and not supported(name))
    if not found and ops_in_message(message):
        found = [(f"aten.{n}", "", "") for n in sorted(ops_in_message(message))]
    return unsupported_op_error(target, found, f"{type(e).__name__}: {first_line(e)}", alternatives)


def pt2e_int8(model: Any, task: Task, quantizer: Any, calib_samples: int, target: str,
              fold_quantize: bool = True) -> Any:
    """A PT2E-quantized graph module (static int8), calibrated on up to ``calib_samples`` of
    ``task.calib_data``; it keeps a dynamic batch axis, so it can be exported again at any size."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    graph = export_program(model, task, None, target).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(graph, quantizer)
        seen = 0
        with torch.no_grad():
            for batch in task.calib_data:
                inputs = batch[0] if isinstance(batch, tuple) else batch
                prepared(*[torch.from_numpy(inputs[n]).clone(memory_format=torch.contiguous_format)
                           for n in task.input_names])
                seen += len(next(iter(inputs.values())))
                if seen >= calib_samples:
                    break
        if seen == 0:
            raise ModelpressError(f"{target} int8 needs calibration inputs, but the task's calib_data is empty.")
        converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    move_exported_model_to_eval(converted)  # inference-mode ops (dropout, batch norm)
    for module in converted.modules():  # exported modules refuse .eval(); converters read the flag
        module.training = False
    return converted


def method_name(batch_size: int) -> str:
    return f"batch_{batch_size}"


# ---- the ExecuTorch exporter ------------------------------------------------------------------------

def missing_kernels(edge: Any, names: list[str]) -> list[tuple[str, str, str]]:
    """Ops left outside the XNNPACK delegate that the installed ExecuTorch runtime has no kernel for."""
    try:
        from executorch.runtime import Runtime

        registered = Runtime.get().operator_registry.operator_names
    except Exception:  # no runtime here: the runtime reports missing kernels at load time instead
        return []

    # Kernels register out-variants ('aten::addmm.out'): compare op base names.
    bases = {r.split("::", 1)[1].split(".", 1)[0] for r in registered if r.startswith("aten::")}

    def missing(name: str) -> bool:
        return name.startswith("aten.") and name.split(".")[1] not in bases

    return locate([edge.exported_program(n) for n in names], missing)


def export(model: Any, task: Task, folder: Path, config: Config = Config(), **manifest: Any) -> artifact.Artifact:
    """Write ``model.pte`` (one method per batch size) and its manifest into ``folder``."""
    require(PACKAGE, EXTRA, "The ExecuTorch exporter")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    source = model.eval()
    if config.int8:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=config.per_channel))
        source = pt2e_int8(model, task, quantizer, config.calib_samples, "ExecuTorch")
    sizes = sorted(config.batch_sizes)
    programs = {method_name(b): export_program(source, task, b, "ExecuTorch") for b in sizes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            edge = to_edge_transform_and_lower(programs, partitioner=[XnnpackPartitioner()])
        except Exception as e:
            first = next(iter(programs.values()))  # core-ATen form: the ops the edge dialect checks
            raise conversion_error("ExecuTorch", e, [first, first.run_decompositions()], ALTERNATIVES) from None
        missing = missing_kernels(edge, list(programs))
        if missing:
            raise unsupported_op_error("ExecuTorch (XNNPACK and the portable kernels)", missing, "", ALTERNATIVES)
        try:
            program = edge.to_executorch()
        except Exception as e:
            raise conversion_error("ExecuTorch", e, list(programs.values()), ALTERNATIVES) from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    artifact.atomic_write_bytes(folder / FILE, program.buffer)
    return artifact.write_for_task(folder, FILE, FORMAT, task, batch_sizes=sizes,
                                   methods={str(b): method_name(b) for b in sizes},
                                   precision="int8" if config.int8 else "fp32", delegate="xnnpack", **manifest)
