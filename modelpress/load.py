"""Safe loading of user model files.

Weights load without running code: safetensors, or ``torch.load(weights_only=True)``. A file that holds
a whole pickled model needs unpickling, which can run arbitrary code; it is refused unless the user
passes ``trust_pickle=True`` (``--trust-pickle``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ModelFileError

PICKLE_RISK = ("Unpickling a file can run any code its author put in it. Load it only if you trust its source: "
               "pass --trust-pickle (trust_pickle=True), or better, save the weights with safetensors or "
               "torch.save(model.state_dict()) and load them into the task's model.")


def load_state(path: str | Path, trust_pickle: bool = False) -> Any:
    """A state dict (or, with ``trust_pickle``, a whole module) from ``path``."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Model file {path} does not exist.")
    if path.stat().st_size == 0:
        raise ModelFileError(f"Model file {path} is empty.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise ModelFileError(f"{path} is not a readable safetensors file ({str(e)[:200]}); it may be truncated.") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        message = str(e)
        needs_code = "weights_only" in message or "Unsupported global" in message or "GLOBAL" in message
        if not needs_code:
            raise ModelFileError(
                f"{path} is not a readable torch file ({message.splitlines()[0][:200] if message else type(e).__name__}); "
                f"it may be truncated or not a model file."
            ) from None
        if not trust_pickle:
            raise ModelFileError(f"{path} holds pickled Python objects, not only weights. {PICKLE_RISK}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ModelFileError(f"{path} could not be unpickled: {str(e)[:200]}") from None


def load_into(model: Any, path: str | Path, trust_pickle: bool = False) -> Any:
    """Load weights from ``path`` into ``model`` (the task's architecture), or return a trusted whole module."""
    import torch

    state = load_state(path, trust_pickle)
    if isinstance(state, torch.nn.Module):
        return state.eval()
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path} does not hold a state dict of tensors.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"The weights in {path} do not fit the task's model: {str(e).splitlines()[0][:300]}") from None
    return model.eval()
