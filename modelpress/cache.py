"""The user cache folder, and reference models trained on first use and cached under a content hash
(safetensors only). Shared by the built-in tasks and by runtimes that cache compiled engines."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .errors import ModelFileError
from .progress import log

# Reference models train on this many torch threads whatever the caller set: sums split over a different
# number of threads round differently, and the trained model would depend on which process trained it.
TRAIN_THREADS = 2


def cache_dir() -> Path:
    """``$MODELPRESS_CACHE``, else ``$XDG_CACHE_HOME/modelpress``, else ``~/.cache/modelpress``."""
    if os.environ.get("MODELPRESS_CACHE"):
        return Path(os.environ["MODELPRESS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "modelpress"


def fingerprint(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cached_model(name: str, build: Callable[[], nn.Module], train: Callable[[nn.Module], nn.Module],
                 key: dict[str, Any], seed: int = 0) -> nn.Module:
    """Load ``name`` from the cache if a file for this exact ``key`` exists, else build, train and save it.
    The initial weights come from ``seed`` (the caller's random state is left as it was), so with a
    deterministic ``train`` the same key gives the same model on every machine of one kind."""
    import torch
    from safetensors.torch import load_file, save_file

    digest = hashlib.sha256(json.dumps({"name": name, "seed": seed, **key}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "models" / f"{name}-{digest}.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if path.exists():
        try:
            model.load_state_dict(load_file(str(path)))
            return model.eval()
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            log.warning(f"the cached model {path} is unreadable ({e}); retraining it.")
    model = train(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, path)
    return model


def check_file(path: Path, hint: str) -> Path:
    if not path.exists():
        raise ModelFileError(f"{path} does not exist. {hint}")
    return path


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes (a weights file's identity in cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def cached_array(name: str, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` once per ``key`` (JSON-serialisable: weights and data fingerprints, versions), kept as
    ``.npy`` under the cache folder: the fp32 model's outputs that the metric of a real model compares with.
    The file is read without unpickling; an unreadable one is recomputed, never trusted."""
    digest = hashlib.sha256(json.dumps({"name": name, **key}, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "outputs" / f"{name}-{digest}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning(f"the cached outputs {path} are unreadable ({e}); recomputing them.")
    out = np.ascontiguousarray(compute())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    np.save(tmp, out, allow_pickle=False)
    os.replace(tmp, path)
    return out


def folder_digest(folder: Path) -> str:
    """The identity of a model folder in cache keys: the digests of its configuration and weights files."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    return hashlib.sha256(json.dumps([(p.name, file_digest(p)) for p in files]).encode()).hexdigest()[:16]
