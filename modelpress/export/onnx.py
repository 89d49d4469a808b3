"""Export to ONNX: one self-contained file, dynamic batch axis, checked with ``onnx.checker``.

Techniques that need to rewrite the exported graph (for example quantization to QDQ) attach
callables to the model under ``POST_EXPORT_ATTR``; each takes and returns an ``onnx.ModelProto``.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import artifact
from ..config import check
from ..errors import ModelFileError, ModelpressError
from ..task import Task

FORMAT = "onnx"
FILE = "model.onnx"
POST_EXPORT_ATTR = "_modelpress_onnx_post_export"


@dataclass(frozen=True)
class Config:
    opset: int = 18
    dynamic_batch: bool = True

    def __post_init__(self) -> None:
        check(7 <= self.opset <= 23, f"opset must be between 7 and 23, got {self.opset}.")


def to_onnx(model: Any, task: Task, config: Config = Config()) -> Any:
    """The model as an in-memory ``onnx.ModelProto`` (fp32, batch axis dynamic)."""
    import onnx
    import torch

    model = model.eval()
    example = tuple(torch.from_numpy(a) for a in task.example_inputs(2).values())
    dynamic = {n: {0: "batch"} for n in (*task.input_names, *task.output_names)} if config.dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, buf, dynamo=False, opset_version=config.opset,
                              input_names=list(task.input_names), output_names=list(task.output_names),
                              dynamic_axes=dynamic, do_constant_folding=True)
        except Exception as e:
            raise ModelpressError(
                f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                f"The model has an operation ONNX cannot express; leave that layer out of compression or "
                f"choose the 'torch' export format."
            ) from None
    proto = onnx.load_from_string(buf.getvalue())
    for transform in getattr(model, POST_EXPORT_ATTR, ()):
        proto = transform(proto, task)
    return proto


def check_model(path: Path) -> None:
    """``onnx.checker`` on a file, with a clear error for broken files."""
    import onnx

    if not Path(path).exists():
        raise ModelFileError(f"ONNX file {path} does not exist.")
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(
            f"{path} is not a valid ONNX model ({first[:200]}). The file is truncated or corrupted: "
            f"export it again."
        ) from None


def export(model: Any, task: Task, folder: Path, config: Config = Config(), **manifest: Any) -> artifact.Artifact:
    """Write ``model.onnx`` and its manifest into ``folder``."""
    proto = to_onnx(model, task, config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    artifact.atomic_write_bytes(folder / FILE, proto.SerializeToString())
    check_model(folder / FILE)
    return artifact.write_for_task(folder, FILE, FORMAT, task, opset=config.opset, **manifest)

