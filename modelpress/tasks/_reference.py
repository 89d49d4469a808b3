"""What the reference tasks (real pretrained models shipped in pip packages) share: finding a package's
files without importing it, a clear error when it is missing, and loading a weights file safely and
strictly, with an error that names the file and the first keys that do not match the definition."""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelFileError, RuntimeUnavailable

EXTRA = "pip install 'modelpress[reference]'"
SHOWN_KEYS = 5  # how many mismatching keys an error lists


def require(module: str, what: str, install: str = EXTRA) -> Any:
    """Import ``module`` or fail saying which install command brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeUnavailable(f"{what} needs the '{module}' package: install it with {install}.") from None


def package_file(module: str, relative: str, what: str, install: str = EXTRA) -> Path:
    """A data file inside an installed package, located without importing the package's code."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailable(f"{what} needs the '{module}' package: install it with {install}.")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ModelFileError(f"{path} is missing from the installed '{module}' package: reinstall it ({install}).")
    return path


def shape_mismatches(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Human-readable differences between two {key: shape} tables: missing keys, unexpected keys and
    shape differences, each group in key order.

    >>> shape_mismatches({"a": (2,), "b": (3,)}, {"a": (2, 1), "c": (1,)})
    ['missing b', 'unexpected c', 'a has shape (2, 1), the model expects (2,)']
    """
    missing = [f"missing {k}" for k in expected if k not in found]
    unexpected = [f"unexpected {k}" for k in found if k not in expected]
    shapes = [f"{k} has shape {tuple(found[k])}, the model expects {tuple(v)}"
              for k, v in expected.items() if k in found and tuple(found[k]) != tuple(v)]
    return missing + unexpected + shapes


def check_keys(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], path: Path,
               what: str) -> None:
    problems = shape_mismatches(expected, found)
    if problems:
        more = len(problems) - SHOWN_KEYS
        shown = "; ".join(problems[:SHOWN_KEYS]) + (f"; and {more} more" if more > 0 else "")
        raise ModelFileError(f"The weights in {path} do not match the {what} definition ({len(problems)} "
                             f"differences): {shown}. Reinstall the package that ships them, or give the file "
                             f"saved for this model.")


def read_state_dict(path: Path, what: str) -> dict[str, Any]:
    """Tensors from a ``.safetensors`` file or a ``torch.save`` state dict read with ``weights_only=True``
    (a pickle that holds anything but tensors and plain containers is refused, so no code runs)."""
    import torch

    if not path.is_file():
        raise ModelFileError(f"The {what} weights file {path} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"Cannot read the {what} weights {path}: {str(e).splitlines()[0][:300]}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} is not a state dict (a mapping of names to tensors), so it cannot be the "
                             f"{what} weights.")
    return dict(state)


def load_weights(model: Any, path: Path, what: str) -> Any:
    """``model`` with the weights of ``path`` loaded strictly (every key and shape must match), in eval mode."""
    state = read_state_dict(path, what)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_keys(expected, {k: tuple(v.shape) for k, v in state.items()}, path, what)
    model.load_state_dict(state, strict=True)
    return model.eval()
