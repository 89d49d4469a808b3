"""Time one layer against its replacement on a runtime: what techniques that must time something (low-rank
keeps a split only where it runs faster) receive from the pipeline as ``Tools.time_ratio``.

Both modules are exported alone with the recipe's exporter (fp32, one input ``x``) and loaded with the
recipe's runtime settings, then timed interleaved; the ratio is the median of per-round ratios.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .bench import BenchConfig, interleaved

TIMING = BenchConfig(warmup=5, rounds=15, runs_per_round=10)


def layer_task(x: np.ndarray) -> Any:
    """A one-input task over ``x`` (for exporting a single layer; it is never scored)."""
    from .task import Batches, Task

    data = Batches({"x": x}, np.zeros(len(x), np.int64), batch_size=len(x))
    return Task(name="layer", build_model=lambda: None, input_names=("x",), output_names=("y",),
                calib_data=Batches({"x": x}, batch_size=len(x)), val_data=data, test_data=data,
                output_kinds=("values",))


def time_ratio(original: Any, replacement: Any, x: np.ndarray, export_format: str, export_config: Any,
               runtime: Any, config: BenchConfig = TIMING) -> float:
    """Latency of ``replacement`` over ``original`` on input ``x`` (batch on axis 0)."""
    from . import registry
    from .export import fp32_config
    from .runtime import open_session

    exporter = registry.module("export format", export_format)
    export_config = fp32_config(export_config)  # the layers are timed in float
    task = layer_task(np.ascontiguousarray(x, dtype=np.float32))
    runs = {}
    with tempfile.TemporaryDirectory(prefix="modelpress-layer-") as tmp:
        for name, module in (("original", original), ("replacement", replacement)):
            art = exporter.export(module.eval(), task, Path(tmp) / name, export_config)
            runs[name] = open_session(art, runtime).run
        times = interleaved(runs, {"x": task.calib_data.arrays["x"]}, config)
    paired = [np.median(r) / np.median(o) for r, o in zip(times["replacement"], times["original"])]
    return float(np.median(paired))


def tools_for(recipe: Any) -> Any:
    """The ``Tools`` a recipe's steps get: timing on its export format and runtime."""
    from functools import partial

    from .compress import Tools

    return Tools(time_ratio=partial(time_ratio, export_format=recipe.export.format,
                                    export_config=recipe.export.exporter_config(), runtime=recipe.runtime))
