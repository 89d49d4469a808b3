"""ExecuTorch sessions (the ``executorch.runtime`` Python bindings; XNNPACK threads from the config).

Artifacts hold one method per compiled batch size; :class:`FixedBatchSession` runs any batch by
splitting it over those sizes (padding the last piece when that saves calls). The LiteRT runtime
uses the same class for its per-batch-size signatures.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ModelFileError, ModelpressError, RuntimeUnavailable
from . import RuntimeConfig, check_inputs

FORMATS = ("executorch",)
EXTRA = "executorch"
PACKAGE = "executorch.runtime"  # what load() imports (available() and the search check it with find_spec)

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def available() -> bool:
    # find_spec, not import: importing the runtime takes seconds (it loads torchao); load() imports it
    # and turns a broken installation into RuntimeUnavailable
    import importlib.util

    try:
        return importlib.util.find_spec(PACKAGE) is not None
    except (ImportError, ValueError):
        return False


def why_unavailable() -> str:
    return "the ExecuTorch runtime is not installed; install it with 'pip install modelpress[executorch]'."


def split(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Chunks (samples taken, compiled batch size) that cover ``n`` samples.

    An exact size is used as is; otherwise a remainder is padded up to the next compiled size when that
    size is at most twice the remainder (one call instead of many), else the largest size that fits.

    >>> split(70, [1, 32])
    [(32, 32), (32, 32), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1)]
    >>> split(20, [1, 32])
    [(20, 32)]
    """
    out, left = [], n
    while left > 0:
        above = [s for s in sizes if s >= left]
        fit = [s for s in sizes if s <= left]
        if left in sizes:
            size = left
        elif above and min(above) <= 2 * left:
            size = min(above)
        elif fit:
            size = max(fit)
        else:
            size = min(above)
        take = min(size, left)
        out.append((take, size))
        left -= take
    return out


class FixedBatchSession:
    """A Session over runners compiled for fixed batch sizes (``size -> runner(list of arrays)``)."""

    def __init__(self, runners: dict[int, Runner], input_names: tuple[str, ...], spec: dict | None):
        self.runners = dict(runners)
        self.sizes = sorted(self.runners)
        self.input_names = tuple(input_names)
        self._spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._spec:
            check_inputs(inputs, self._spec)
        arrays = [np.ascontiguousarray(inputs[n]) for n in self.input_names]
        n = len(arrays[0])
        if n == 0:
            raise ModelpressError("The input batch is empty: give at least one sample.")
        pieces, start = [], 0
        for take, size in split(n, self.sizes):
            chunk = [a[start:start + take] for a in arrays]
            if take < size:  # pad by repeating the last sample; its outputs are dropped below
                chunk = [np.concatenate([c, np.repeat(c[-1:], size - take, axis=0)]) for c in chunk]
            pieces.append([o[:take] for o in self.runners[size](chunk)])
            start += take
        if len(pieces) == 1:
            return pieces[0]
        return [np.concatenate(outs) for outs in zip(*pieces)]


def batch_methods(manifest: dict[str, Any]) -> dict[int, str]:
    """Compiled batch size -> method/signature name, from the manifest."""
    methods = manifest.get("methods")
    if not isinstance(methods, dict) or not methods:
        raise ModelFileError("The artifact's manifest lists no compiled batch sizes ('methods'); re-export it.")
    return {int(b): str(name) for b, name in methods.items()}


def set_threads(threads: int) -> None:
    """XNNPACK's thread pool is process-wide: the last session loaded sets it."""
    try:
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError):  # older bindings: keep the default pool
        pass


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> FixedBatchSession:
    import torch

    try:
        from executorch.runtime import Runtime
    except Exception as e:
        raise RuntimeUnavailable(f"The ExecuTorch runtime does not import ({type(e).__name__}: {e}); reinstall it "
                                 f"with 'pip install modelpress[executorch]'.") from None
    path = artifact.runnable_path()
    with open(path, "rb") as f:
        head = f.read(8)
    # A .pte is a FlatBuffer with the identifier 'ET' + two digits at bytes 4..8. The loader aborts the
    # whole process on bytes that are not one, so check before handing it the file.
    if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        raise ModelFileError(f"{path} is not an ExecuTorch program (no 'ET' file identifier); re-export it.")
    set_threads(config.threads)
    try:
        program = Runtime.get().load_program(str(path))
        methods = {size: program.load_method(name) for size, name in batch_methods(artifact.manifest).items()}
    except ModelFileError:
        raise
    except Exception as e:
        raise ModelFileError(f"ExecuTorch cannot load {path}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__}. "
                             f"The file is damaged, or it needs kernels this ExecuTorch build lacks: re-export it.") from None

    def runner(method: Any) -> Runner:
        def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
            outs = method.execute([torch.from_numpy(a) for a in arrays])
            # outputs live in memory the next call reuses: copy them out
            return [o.detach().numpy().copy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]
        return run

    spec = artifact.manifest.get("inputs")
    return FixedBatchSession({size: runner(m) for size, m in methods.items()}, tuple(spec), spec)
