"""Storage codecs for compressed artifacts (registered in ``registry.STORAGE``): each has
``encode(artifact, model, config) -> Artifact`` and ``decode(artifact) -> Path`` to a plain runnable file."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
