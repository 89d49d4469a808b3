"""Artifacts: a deployable file plus ``manifest.json`` (format, inputs/outputs, recipe, hashes, versions).

A compressed artifact may store its model encoded (``manifest["encoding"]``, a STORAGE codec); the
runtimes call :meth:`Artifact.runnable_path`, which decodes it to a plain file for them.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelFileError

MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def versions() -> dict[str, str]:
    """Versions of the libraries that shaped an artifact (only those already imported or cheap to read)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("modelpress", "torch", "onnx", "onnxruntime", "openvino", "ai-edge-litert", "executorch", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class Artifact:
    """A folder holding a deployable model file and its manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def path(self) -> Path:
        """The main stored file (possibly encoded)."""
        return self.folder / self.manifest["file"]

    @property
    def size_bytes(self) -> int:
        """Bytes of every stored file a deployment needs (the manifest itself is not counted)."""
        return sum((self.folder / f).stat().st_size for f in self.manifest["files"])

    def runnable_path(self) -> Path:
        """A plain file the runtime can open: the stored file, or its decoded form for encoded artifacts."""
        encoding = self.manifest.get("encoding")
        if not encoding:
            return self.path
        from . import registry

        return registry.module("storage encoding", encoding).decode(self)

    def verify(self) -> None:
        """Check that every file exists and matches its recorded hash."""
        for name, digest in self.manifest["files"].items():
            path = self.folder / name
            if not path.exists():
                raise ModelFileError(f"Artifact file {path} is missing; re-export the model.")
            if sha256(path) != digest:
                raise ModelFileError(
                    f"Artifact file {path} does not match the hash in its manifest (truncated or modified); "
                    f"re-export the model."
                )


def write(folder: Path, file: str, format: str, inputs: dict[str, Any], outputs: list[str],
          extra_files: tuple[str, ...] = (), **fields: Any) -> Artifact:
    """Write ``manifest.json`` for files already in ``folder`` and return the Artifact."""
    folder = Path(folder)
    files = {name: sha256(folder / name) for name in (file, *extra_files)}
    manifest = {"format": format, "file": file, "files": files, "inputs": inputs, "outputs": outputs,
                "versions": versions(), **fields}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return Artifact(folder, manifest)


def load(folder: str | Path, verify: bool = True) -> Artifact:
    """Open an artifact folder (or the model file inside one) and check it against its manifest."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise ModelFileError(
            f"{folder} is not a modelpress artifact: it has no {MANIFEST}. Export one with "
            f"'modelpress export TASK OUTPUT' or 'modelpress run RECIPE'."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        assert isinstance(manifest, dict) and {"format", "file", "files"} <= manifest.keys()
    except Exception:
        raise ModelFileError(f"{manifest_path} is damaged (not a valid manifest); re-export the model.") from None
    art = Artifact(folder, manifest)
    if verify:
        art.verify()
    return art


def write_for_task(folder: Path, file: str, format: str, task: Any, extra_files: tuple[str, ...] = (),
                   **fields: Any) -> Artifact:
    """:func:`write` with the inputs, outputs, task name and preprocessing taken from ``task``.
    Every exporter ends with this call."""
    inputs = {n: {"shape": ["batch", *a.shape[1:]], "dtype": str(a.dtype)} for n, a in task.example_inputs(1).items()}
    return write(folder, file, format, inputs, list(task.output_names), extra_files, task=task.name,
                 preprocessing=dict(task.preprocessing), **fields)
