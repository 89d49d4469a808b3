"""Export to ONNX: one self-contained file, dynamic batch axis, checked with ``onnx.checker``.

Techniques that need the exported graph rewritten (quantization to QDQ) return ``OnnxRewrite`` callables in
their ``Applied``; the pipeline passes them as ``rewrites``. Each takes the ``onnx.ModelProto`` and returns the
new one with its facts, which the manifest keeps under ``facts`` (the pipeline puts them in the result).
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import artifact
from ..config import check
from ..errors import ModelFileError, ModelpressError
from ..task import Task

FORMAT = "onnx"
FILE = "model.onnx"
LOWERS_ONNX_REWRITES = True  # this exporter applies techniques' ONNX rewrites (see modelpress.compress.Applied)


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
    return onnx.load_from_string(buf.getvalue())


def lower(proto: Any, rewrites: Sequence[Any], task: Task) -> tuple[Any, dict[str, Any]]:
    """``proto`` with every rewrite applied in order, and the facts they reported (later ones win)."""
    facts: dict[str, Any] = {}
    for rewrite in rewrites:
        proto, learned = rewrite(proto, task)
        facts.update(learned)
    return proto, facts


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


def export(model: Any, task: Task, folder: Path, config: Config = Config(), *, rewrites: Sequence[Any] = (),
           **manifest: Any) -> artifact.Artifact:
    """Write ``model.onnx`` (after ``rewrites``) and its manifest into ``folder``."""
    proto, facts = lower(to_onnx(model, task, config), rewrites, task)
    if facts:
        manifest["facts"] = {**manifest.get("facts", {}), **facts}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    artifact.atomic_write_bytes(folder / FILE, proto.SerializeToString())
    check_model(folder / FILE)
    return artifact.write_for_task(folder, FILE, FORMAT, task, opset=config.opset, **manifest)

