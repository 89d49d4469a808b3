"""modelpress: compress, convert, accelerate and measure deep learning models.

The public API, imported lazily so that ``import modelpress`` stays light (no torch, no runtime)::

    import modelpress

    recipe = modelpress.load_recipe("recipes/quantize_static.yaml")
    result = modelpress.run(recipe, "runs/int8")          # a modelpress.result.Result
    print(result.score, result.latency_ratio, result.size_ratio)

``run`` (one recipe), ``auto`` (the search), ``analyze`` (where size and time go), ``Task`` and ``Batches`` (a
task of your own), ``load_recipe``. Messages go to the ``modelpress`` logger.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"
__all__ = ["run", "auto", "analyze", "Task", "Batches", "load_recipe", "__version__"]

_LAZY = {
    "run": "modelpress.pipeline",
    "auto": "modelpress.search.loop",
    "analyze": "modelpress.analyze",
    "Task": "modelpress.task",
    "Batches": "modelpress.task",
    "load_recipe": "modelpress.recipe",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'modelpress' has no attribute '{name}'")
    module = import_module(_LAZY[name])
    # ``analyze`` is also the subpackage, which Python binds here once imported: the package is callable
    # (``modelpress.analyze(task)`` runs ``modelpress.analyze.analyze``), so both spellings work.
    value = module if name == "analyze" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
