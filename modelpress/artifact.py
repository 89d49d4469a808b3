"""Artifacts: a deployable file plus ``manifest.json`` (format, inputs/outputs, recipe, hashes, versions).

A compressed artifact may store its model encoded (``manifest["encoding"]``, a STORAGE codec); the
runtimes call :meth:`Artifact.runnable_path`, which decodes it to a plain file for them.

Every file of an artifact is listed in ``files`` (the model files) or ``support_files`` (a bundle's runner
and notes) with its sha256; :func:`load` refuses a manifest that names a path outside the folder (``..``,
absolute, through a link), a listed file that is missing or changed, and a file that is not listed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ModelFileError, shown

MANIFEST = "manifest.json"
SUPPORT = "support_files"  # hashed files that are not the model (a bundle's predict.py, README.md, ...)
UNLISTED = (MANIFEST, ".modelpress-output")  # the only files an artifact folder may hold unlisted
MAX_MANIFEST_BYTES = 16 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def files_in(folder: Path) -> list[str]:
    """Every file and link under ``folder`` as a relative POSIX path (links are not followed)."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / name).as_posix() for name in files]
        out += [(rel / d).as_posix() for d in dirs if Path(root, d).is_symlink()]
    return sorted(out)


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
        return inside(self.folder, self.manifest["file"])

    @property
    def size_bytes(self) -> int:
        """Bytes of every stored file a deployment needs (the manifest itself is not counted)."""
        return sum(inside(self.folder, f).stat().st_size for f in self.manifest["files"])

    def runnable_path(self) -> Path:
        """A plain file the runtime can open: the stored file, or its decoded form for encoded artifacts."""
        encoding = self.manifest.get("encoding")
        if not encoding:
            return self.path
        from . import registry

        return registry.module("storage encoding", encoding).decode(self)

    def verify(self) -> None:
        """Check that every listed file exists inside the folder and matches its recorded hash, and that the
        folder holds no file its manifest does not list."""
        listed = {**self.manifest["files"], **self.manifest.get(SUPPORT, {})}
        for name, digest in listed.items():
            path = inside(self.folder, name)
            if not path.is_file():
                raise ModelFileError(f"Artifact file {shown(path)} is missing; re-export the model.")
            if sha256(path) != digest:
                raise ModelFileError(
                    f"Artifact file {shown(path)} does not match the hash in its manifest (truncated or modified); "
                    f"re-export the model."
                )
        extra = [f for f in files_in(self.folder) if f not in listed and f not in UNLISTED
                 and "__pycache__" not in PurePosixPath(f).parts]
        if extra:
            raise ModelFileError(
                f"{shown(self.folder)} holds file(s) its manifest does not list ({', '.join(shown(e, 60) for e in extra[:5])}); "
                f"an artifact runs only with the files it was made with. Remove them, or re-export the model.")


def inside(root: Path, name: Any) -> Path:
    """``root / name`` for a plain relative POSIX path that stays inside ``root`` (no ``..``, no absolute
    path, no link out of it); anything else is refused."""
    rel = PurePosixPath(name) if isinstance(name, str) else None
    if (rel is None or not name or "\x00" in name or "\\" in name or rel.is_absolute() or ".." in rel.parts
            or rel.as_posix() != name):
        raise ModelFileError(f"The manifest in {shown(root)} names the file {shown(repr(name))}, which is not a plain "
                             f"path inside its folder; refusing it. Re-export the model.")
    path = Path(root) / name
    real, base = path.resolve(), Path(root).resolve()
    if path.is_symlink() or not (real == base or base in real.parents):
        raise ModelFileError(f"The file {shown(name)} in {shown(root)} is a link or leads outside its folder; "
                             f"refusing it. Re-export the model.")
    return path


def check_manifest(manifest: Any, where: Path) -> dict[str, Any]:
    """The manifest's structure: format, file, every file with a sha256, inputs and outputs."""
    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"{shown(where)} is damaged ({why}); re-export the model.")

    if not isinstance(manifest, dict) or not {"format", "file", "files"} <= manifest.keys():
        raise bad("not a manifest with format, file and files")
    if not isinstance(manifest["format"], str) or not isinstance(manifest["file"], str):
        raise bad("format and file must be text")
    for key in ("files", SUPPORT):
        table = manifest.get(key, {})
        if not isinstance(table, dict) or not all(isinstance(d, str) and _SHA256.fullmatch(d) for d in table.values()):
            raise bad(f"'{key}' must map each file name to its sha256")
        for name in table:
            inside(where.parent, name)
            if name in UNLISTED:
                raise bad(f"'{name}' is not a model file")
    if manifest["file"] not in manifest["files"]:
        raise bad("the model file is not listed in 'files' with its hash")
    if set(manifest["files"]) & set(manifest.get(SUPPORT, {})):
        raise bad("a file is listed twice")
    inputs, outputs = manifest.get("inputs"), manifest.get("outputs")
    if not isinstance(inputs, dict) or not inputs or not all(
            isinstance(n, str) and isinstance(v, dict) and isinstance(v.get("shape"), list)
            and all(isinstance(d, str) or (type(d) is int and 0 <= d < 2**31) for d in v["shape"])
            and isinstance(v.get("dtype"), str) and _numeric_dtype(v["dtype"]) for n, v in inputs.items()):
        raise bad("'inputs' must map each input name to a shape list and a numeric dtype")
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise bad("'outputs' must be a list of names")
    return manifest


def _numeric_dtype(name: str) -> bool:
    import numpy as np

    try:
        return np.dtype(name).kind in "biufc" and len(name) < 16
    except TypeError:
        return False


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
            f"{shown(folder)} is not a modelpress artifact: it has no {MANIFEST}. Export one with "
            f"'modelpress export TASK OUTPUT' or 'modelpress run RECIPE'."
        )
    try:
        if manifest_path.is_symlink() or manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        manifest = json.loads(manifest_path.read_bytes())
    except (OSError, ValueError, RecursionError):
        raise ModelFileError(f"{shown(manifest_path)} is damaged (not a valid manifest); re-export the model.") from None
    art = Artifact(folder, check_manifest(manifest, manifest_path))
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
