"""Storage codecs for compressed artifacts (registered in ``registry.STORAGE``): each has
``encode(artifact, model, options) -> Artifact`` and ``decode(artifact) -> Path`` to a plain runnable file.
What a codec wants in the result (bits per weight, a note) goes into the manifest's ``facts`` field, which the
pipeline merges into result.json."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SKELETON, INDEX = "__skeleton__", "__index__"  # keys of the ONNX skeleton and the JSON index in a container
_BASE_FIELDS = ("format", "file", "files", "inputs", "outputs", "versions")


def cached_decoding(artifact: Any, codec: str, dense_name: str, build: Callable[[], bytes]) -> Path:
    """The dense runnable file of an encoded artifact: ``build()`` once per content hash of the encoded file
    (so a changed file never reuses a stale decoding), kept under the system temporary folder."""
    from ..artifact import atomic_write_bytes, sha256

    target = Path(tempfile.gettempdir()) / "modelpress-decoded" / f"{codec}-{sha256(artifact.path)[:32]}" / dense_name
    if target.exists():
        return target
    data = build()
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, data)
    return target


def rewrite_manifest(artifact: Any, file: str, **extra: Any) -> Any:
    """The artifact's manifest pointed at ``file``, with its extra fields kept and ``extra`` added."""
    from .. import artifact as art_mod

    m = artifact.manifest
    fields = {k: v for k, v in m.items() if k not in _BASE_FIELDS}
    fields.update(extra)
    return art_mod.write(artifact.folder, file, m["format"], m["inputs"], m["outputs"], **fields)


def container(proto: Any, index: dict[str, Any], arrays: dict[str, Any]) -> bytes:
    """One safetensors file: ``arrays``, the ONNX skeleton ``proto`` (its moved-out data cleared) and ``index``."""
    import json

    import numpy as np
    import safetensors.numpy

    skeleton = {SKELETON: np.frombuffer(proto.SerializeToString(), dtype=np.uint8),
                INDEX: np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)}
    return safetensors.numpy.save({**arrays, **skeleton})


def replace_dense(artifact: Any, file: str, payload: bytes, **extra: Any) -> Any:
    """Write the encoded ``payload`` as ``file``, point the manifest at it (``extra`` added) and remove the dense
    file it replaces."""
    from ..artifact import atomic_write_bytes

    atomic_write_bytes(artifact.folder / file, payload)
    dense = artifact.path
    out = rewrite_manifest(artifact, file, **extra)
    if dense.name != file:
        dense.unlink(missing_ok=True)
    return out
