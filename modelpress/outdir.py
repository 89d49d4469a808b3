"""Output folders: one writer at a time, built under a temporary name, published whole, and only ever
replacing what modelpress itself made.

    stage = prepare_output(out, force, inputs=[recipe])  # lock OUT, clean up after killed runs, check
    ...write into stage...
    publish(stage, out)                                  # swap it in, mark it as ours, release the lock
    # on failure: discard(stage)                         # remove the stage, release the lock

Invariants:
- ``OUT`` is locked (``fcntl.flock`` on ``.OUT.lock`` beside it) from ``prepare_output`` until ``publish``
  or ``discard``; the kernel drops the lock when a process dies, so a killed run never leaves it stuck.
- While holding the lock, every ``.OUT.partial-*`` folder is a leftover of a dead run and is removed, and a
  previous output that a killed ``--force`` run had moved aside (``.OUT.old-*``) is put back.
- ``--force`` replaces only an output that holds :data:`MARKER` (written by :func:`publish`, listing every
  file it published) and nothing else, and never one that holds the command's inputs.
- Every temporary file of a CLI command lives in one :func:`locks.scratch` folder, removed at the end of
  the command or, if the command was killed, by the next one.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path

from .artifact import files_in
from .errors import ModelpressError, shown
from .locks import Lock

MARKER = ".modelpress-output"  # in every folder (and bundle zip) modelpress publishes: its own file list


_HELD: dict[Path, Lock] = {}  # stage folder -> the lock on its output, until publish or discard


def normal(out: str | Path) -> Path:
    """``out`` as an absolute path with its parent's links resolved; refuses the file system root."""
    out = Path(os.path.abspath(out))
    if out.name in ("", ".", ".."):
        raise ModelpressError(f"{shown(out)} cannot be an output: choose a new folder to write into.")
    return Path(os.path.realpath(out.parent)) / out.name


def _lock_for(out: Path) -> Lock:
    return Lock(out.with_name(f".{out.name}.lock"), "Another modelpress command (pid {pid}) is writing "
                + shown(out) + " right now. Wait for it to finish, or choose another output.")


def _recover(out: Path) -> None:
    """With ``out`` locked: every staging folder is a dead run's; put back an output moved aside by a killed
    ``--force`` run."""
    for pattern in (f".{out.name}.old-*", f".{out.name}.partial-*"):
        for path in sorted(out.parent.glob(pattern)):
            if ".old-" in path.name and not out.exists():
                path.rename(out)
            else:
                shutil.rmtree(path, ignore_errors=True)


def recover(out: str | Path) -> None:
    """Clean up after a killed run into ``out`` (nothing to do while another process is writing it)."""
    out = normal(out)
    if not out.parent.is_dir():
        return
    try:
        lock = _lock_for(out).acquire()
    except ModelpressError:
        return  # a live writer owns the staging folders
    try:
        _recover(out)
    finally:
        lock.release()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_inputs(out: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, holds or lies inside one of the command's inputs."""
    target = normal(out)
    real = target.resolve() if target.exists() else target
    for given in inputs:
        path = Path(given).resolve()
        if _inside(path, real):
            raise ModelpressError(
                f"The output {shown(out)} {'is' if path == real else 'holds'} this command's input {shown(given)}: "
                f"modelpress never overwrites or deletes its inputs. Choose another output.")
        if path.is_dir() and _inside(real, path):
            raise ModelpressError(
                f"The output {shown(out)} lies inside the input folder {shown(given)}: modelpress never writes "
                f"into its inputs. Choose an output outside it.")


def not_ours(out: Path) -> str | None:
    """Why ``out`` is not an output modelpress made and may not be replaced, or None when it may."""
    if out.is_symlink():
        return "is a link"
    if out.is_file():
        try:
            with zipfile.ZipFile(out) as z:
                return None if MARKER in z.namelist() else "is a zip file modelpress did not write"
        except (zipfile.BadZipFile, OSError):
            return "is a file modelpress did not write"
    if not out.is_dir():
        return "is not a regular folder"
    try:
        listed = set(json.loads((out / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return (f"has no valid {MARKER} file, so modelpress did not make it (or an older version did)")
    extra = sorted(set(files_in(out)) - listed - {MARKER})
    if extra:
        return f"holds files modelpress did not write ({', '.join(shown(e, 60) for e in extra[:5])})"
    return None


def check_target(out: str | Path, force: bool, inputs: Iterable[str | Path] = (), file: bool = False) -> Path:
    """Refuse ``out`` as an output: it holds or lies inside an input, or it exists and ``force`` was not given,
    or modelpress did not make it. Returns ``out`` normalised. ``file``: the output is one file (a zip)."""
    given, out = out, normal(out)
    check_inputs(out, inputs)
    if out.exists() or out.is_symlink():
        if not force:
            raise ModelpressError(f"The output {shown(given)} already exists. Choose another output or pass "
                                  f"--force to replace it.")
        why = not_ours(out) or (("is a folder" if out.is_dir() else None) if file else
                                ("is a file" if not out.is_dir() else None))
        if why:
            raise ModelpressError(f"--force replaces only an output modelpress made, and {shown(given)} {why}. "
                                  f"Nothing was changed: choose another output, or move it away yourself.")
        if _inside(Path.cwd().resolve(), out.resolve()):
            raise ModelpressError(f"The output {shown(given)} holds the current folder; replacing it would pull "
                                  f"the folder out from under this command. Run it from another folder.")
    return out


def prepare_output(out: str | Path, force: bool, inputs: Iterable[str | Path] = (), file: bool = False) -> Path:
    """Lock ``out``, clean up after killed runs and return a fresh staging folder beside it, after
    :func:`check_target` (again, now under the lock)."""
    out = normal(out)
    check_inputs(out, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_for(out).acquire()
    try:
        _recover(out)
        check_target(out, force, inputs, file)
        stage = out.with_name(f".{out.name}.partial-{os.getpid()}")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    except BaseException:
        lock.release()
        raise
    _HELD[stage] = lock
    return stage


def mark(stage: Path) -> None:
    """Write :data:`MARKER` into ``stage``: the files modelpress put there (``--force`` may replace only them)."""
    from .artifact import atomic_write_text

    files = [f for f in files_in(stage) if f != MARKER]
    atomic_write_text(stage / MARKER, json.dumps({"written_by": "modelpress", "files": files}, indent=1))


def publish(stage: Path, out: str | Path) -> None:
    """Replace ``out`` by the finished ``stage`` folder and release its lock. An existing ``out`` is moved
    aside first and removed only after the swap; :func:`recover` puts it back if the process dies between."""
    stage, out = Path(stage), Path(out)
    mark(stage)
    for path in stage.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    if out.exists() or out.is_symlink():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        stage.rename(out)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        stage.rename(out)
    _release(stage)


def discard(stage: Path) -> None:
    """Remove an unpublished ``stage`` (if still there) and release its output's lock."""
    shutil.rmtree(stage, ignore_errors=True)
    _release(stage)


def _release(stage: Path) -> None:
    lock = _HELD.pop(Path(stage), None)
    if lock is not None:
        lock.release()


def check_output_file(path: str | Path, force: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """A single output file (``predict -o``): never an input, never inside an input folder (a bundle),
    never a folder; an existing file only with ``force``."""
    target = normal(path)
    check_inputs(target, inputs)
    if target.is_dir():
        raise ModelpressError(f"The output {shown(path)} is a folder; give a file name such as out.npy.")
    if (target.exists() or target.is_symlink()) and not force:
        raise ModelpressError(f"The output {shown(path)} already exists. Choose another name or pass --force "
                              f"to replace it.")
    return target
