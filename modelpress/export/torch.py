"""Export to a ``torch.export`` program (``model.pt2``), run by the torch runtime.

``torch.export.load`` reads weights and a graph, not pickled code, so loading it is safe.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import artifact
from ..errors import ModelpressError
from ..task import Task

FORMAT = "torch"
FILE = "model.pt2"


@dataclass(frozen=True)
class Config:
    dynamic_batch: bool = True


def export(model: Any, task: Task, folder: Path, config: Config = Config(), **manifest: Any) -> artifact.Artifact:
    import torch

    example = tuple(torch.from_numpy(a) for a in task.example_inputs(2).values())
    dynamic = None
    if config.dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        dynamic = tuple({0: batch} for _ in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model.eval(), example, dynamic_shapes=dynamic)
        except Exception as e:
            raise ModelpressError(f"torch.export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{FILE}.tmp"
    torch.export.save(program, str(tmp))
    tmp.replace(folder / FILE)
    return artifact.write_for_task(folder, FILE, FORMAT, task, **manifest)
