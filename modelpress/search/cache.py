"""Caches in the output folder, keyed by content hashes, so no finished work is recomputed.

- Prefix cache: the ``Applied`` after the first k steps of a pipeline, keyed by a hash of the task, the
  fp32 model's weights, the steps so far and the source code of the compression package. Candidates
  sharing a prefix (prune 50% then quantize, prune 50% then cluster) compute it once. Entries live in
  memory per worker process (a few, least recently used first out) and on disk as data
  (``skeleton.json`` with the facts and storage request, + ``tensors.safetensors``) when :mod:`skeleton`
  can store the model and the steps left no ONNX rewrite or train hook (those are objects, kept in
  memory only); every disk entry is checked on write by rebuilding it and comparing outputs.
- Result cache: the outcome of a whole candidate, keyed by the candidate, the task, the bench settings
  and the source code of the package, so a candidate sampled twice, or finished just before a kill,
  is not measured again.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..artifact import atomic_write_text


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


@lru_cache(maxsize=None)
def code_hash(folder: str) -> str:
    """Hash of every .py file under ``folder`` (an edit to the code invalidates what it computed)."""
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*.py")):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def package_hash() -> str:
    return code_hash(str(Path(__file__).resolve().parents[1]))


def technique_code_hash(module: Any) -> str:
    """Hash of the folder holding a technique's module (its helpers included)."""
    return code_hash(str(Path(module.__file__).resolve().parent))


def model_fingerprint(model: Any) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class PrefixCache:
    """Models after a pipeline prefix, in memory (``memory_items`` most recent) and in ``folder``."""

    def __init__(self, folder: Path | None, memory_items: int = 6, allowed: tuple[str, ...] = ()):
        from .skeleton import SAFE_PREFIXES

        self.folder = Path(folder) if folder else None
        self.memory: OrderedDict[str, Any] = OrderedDict()
        self.memory_items = memory_items
        self.allowed = (*SAFE_PREFIXES, *allowed)
        self.hits = {"memory": 0, "disk": 0}

    def get(self, key: str) -> Any | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            self.hits["memory"] += 1
            return copy.deepcopy(self.memory[key])
        model = self._load(key)
        if model is not None:
            self.hits["disk"] += 1
            self._remember(key, model)
            return copy.deepcopy(model)
        return None

    def put(self, key: str, applied: Any, example: dict[str, Any]) -> bool:
        """Remember ``applied`` (a copy); returns whether it was also stored on disk."""
        self._remember(key, copy.deepcopy(applied))
        return self._store(key, applied, example)

    def _remember(self, key: str, model: Any) -> None:
        self.memory[key] = model
        self.memory.move_to_end(key)
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)

    def _store(self, key: str, applied: Any, example: dict[str, Any]) -> bool:
        from safetensors.torch import save_file

        from .skeleton import encode, rebuild, skeleton

        if self.folder is None or (self.folder / key).exists() or applied.onnx_rewrites or applied.train_hooks:
            return False
        stored = skeleton(applied.model, self.allowed)
        if stored is None:
            return False
        data, tensors = stored
        if not _same_outputs(applied.model, rebuild(data, tensors, self.allowed), example):
            return False
        try:
            data = {**data, "facts": encode(dict(applied.facts)),
                    "storage": encode(None if applied.storage is None else
                                      [applied.storage.encoding, dict(applied.storage.options)])}
        except Exception:
            return False  # a fact that is not plain data: memory only
        stage = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.folder))
            save_file(tensors, str(stage / "tensors.safetensors"))
            atomic_write_text(stage / "skeleton.json", json.dumps(data))
            os.rename(stage, self.folder / key)  # complete entries only: a kill leaves a dot-folder
        except OSError:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
            return False
        return True

    def _load(self, key: str) -> Any | None:
        from safetensors.torch import load_file

        from ..compress import Applied, Storage
        from .skeleton import NotStorable, decode, rebuild

        if self.folder is None or not (self.folder / key / "skeleton.json").exists():
            return None
        try:
            data = json.loads((self.folder / key / "skeleton.json").read_text())
            model = rebuild(data, load_file(str(self.folder / key / "tensors.safetensors")), self.allowed)
            storage = decode(data["storage"])
            return Applied(model, decode(data["facts"]), None if storage is None else Storage(*storage))
        except (NotStorable, OSError, ValueError, KeyError, RuntimeError, TypeError):
            return None  # a damaged entry is recomputed, never trusted


def _same_outputs(a: Any, b: Any, example: dict[str, Any]) -> bool:
    import torch

    try:
        with torch.no_grad():
            args = [torch.from_numpy(v) for v in example.values()]
            out_a, out_b = a.eval()(*args), b.eval()(*args)
    except Exception:  # the rebuilt model does not even run: it is not the same model, keep it in memory only
        return False
    flat_a = out_a if isinstance(out_a, (tuple, list)) else [out_a]
    flat_b = out_b if isinstance(out_b, (tuple, list)) else [out_b]
    return len(flat_a) == len(flat_b) and all(torch.equal(x, y) for x, y in zip(flat_a, flat_b))


class ResultCache:
    """Outcomes of whole candidates as JSON files (atomic writes)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except (OSError, ValueError):
            return None

    def put(self, key: str, outcome: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / f"{key}.json", json.dumps(outcome, default=str))
