"""Locks a killed process never leaves stuck (``fcntl.flock``: the kernel drops them with the process),
and the per-command scratch folder they guard.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / ".lock"
>>> with Lock(path, "busy (pid {pid})"):
...     Lock(path, "busy (pid {pid})").acquire()  # doctest: +ELLIPSIS
Traceback (most recent call last):
modelpress.errors.ModelpressError: busy (pid ...)
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelpressError, shown

SCRATCH = "modelpress-scratch-"


class Lock:
    """An exclusive ``flock`` on ``path``; ``busy`` is the error when another process holds it, with ``{pid}``
    replaced by that process's pid (plain replacement: user paths in it may hold braces). ``remove``: unlink
    the lock file on release (safe: acquiring checks the file is still the one locked)."""

    def __init__(self, path: Path, busy: str, remove: bool = True):
        self.path, self.busy, self.remove = Path(path), busy, remove
        self._fd: int | None = None

    def acquire(self) -> Lock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise ModelpressError(self.busy.replace("{pid}", shown(other, 12))) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its last holder removed the file while we waited: lock the current one
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if self.remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)  # closing drops the lock
        self._fd = None

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class FolderLock(Lock):
    """The lock of a ``modelpress auto`` study folder (``.lock`` inside it): one driver per study."""

    def __init__(self, folder: Path):
        super().__init__(Path(folder) / ".lock", "Another 'modelpress auto' (pid {pid}) is running on "
                         + shown(folder) + "; wait for it, or use another output folder.", remove=False)


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A private temporary folder for one command, made tempfile's default (and ``$TMPDIR``, for native
    libraries and child processes) while it runs. It is removed at the end; a killed command's folder is
    removed by the next command (its lock is free by then)."""
    root = Path(tempfile.gettempdir())
    for old in root.glob(f"{SCRATCH}*"):
        if old.is_symlink() or not old.is_dir():
            continue  # not a folder a modelpress command made
        try:
            with Lock(old / ".lock", "", remove=False):
                shutil.rmtree(old, ignore_errors=True)
        except (ModelpressError, OSError):
            continue  # in use by a live command, or not ours to touch
    new = Path(tempfile.mkdtemp(prefix=".modelpress-new-", dir=root))
    lock = Lock(new / ".lock", "", remove=False).acquire()  # locked before it is visible to the sweep above
    folder = new.with_name(SCRATCH + new.name.rsplit("-", 1)[-1])
    new.rename(folder)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    previous_env, os.environ["TMPDIR"] = os.environ.get("TMPDIR"), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = previous
        if previous_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous_env
        shutil.rmtree(folder, ignore_errors=True)
        lock.release()
