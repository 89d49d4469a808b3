"""Helpers for the hostile-input tests: a small bundle to tamper with, manifest edits, and a snapshot of
every file under a folder (to prove nothing outside the intended folders was written)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from modelpress.artifact import sha256

ROOT = Path(__file__).resolve().parents[2]


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (links as 'link:TARGET')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = f"link:{p.readlink()}"
        elif p.is_file():
            out[str(p.relative_to(folder))] = sha256(p)
    return out


def edit_manifest(folder: Path, **changes) -> dict:
    """Rewrite ``folder/manifest.json`` with ``changes`` (a value of None deletes the key)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))
    return manifest


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def runner(bundle: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The bundle's own predict.py in an isolated interpreter (no PYTHONPATH, no modelpress)."""
    return subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *args], capture_output=True, text=True,
                          cwd=cwd or bundle, timeout=300)


def modelpress(*args: str, cwd: Path | None = None, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "modelpress", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=timeout)


def clean_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    """Exit code 2, one 'modelpress: error:' paragraph containing ``needle``, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "modelpress: error:" in proc.stderr and needle in proc.stderr, proc.stderr[-2000:]
