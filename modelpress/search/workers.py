"""Trials with a time limit: long-lived worker processes that a trial past its limit is stopped with.

A worker is a spawned process that loads the task once and then runs one job at a time (``trial.run_job``),
telling the driver when a job starts and what it is doing (``trial.stage``). The driver waits on all busy
workers at once; a job still running at its limit is stopped by killing its worker, recorded as a
``timeout`` outcome that says where it was, and a fresh worker takes the slot. The limit counts from the
moment the worker starts the job, so loading the task into a fresh worker is not charged to a trial; an
absolute end (``until``, the search's own deadline) stops it in any case. A worker that dies is noticed
through its process sentinel and recorded as failed with its exit code and stage.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

KILL_GRACE_S = 5.0  # after SIGTERM, how long a stopped worker may take before SIGKILL


def _serve(conn: Any, threads: int, task_name: str | None, scores: tuple[float, float] | None) -> None:
    """A worker's life: load the task, then run jobs until told to stop (None) or killed."""
    import torch

    from . import trial

    torch.set_num_threads(threads)
    trial.report_stages(lambda text, step: conn.send(("stage", (text, step))))
    if task_name:
        try:
            trial.context(task_name, scores)  # before the first job's clock starts
        except Exception:  # the job reports it, with its traceback
            pass
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the driver is gone
            return
        if job is None:
            return
        conn.send(("started", time.monotonic()))
        conn.send(("done", trial.run_job(job)))


@dataclass
class _Worker:
    process: Any
    conn: Any
    job: dict[str, Any] | None = None
    limit_s: float | None = None
    until: float | None = None  # an absolute end (time.monotonic()) the job never runs past
    started: float | None = None  # when the worker said it started the job
    stage: tuple[str, str | None] = ("waiting for the worker", None)


class ProcessRunner:
    """``workers`` worker processes; ``submit(job, limit_s)`` runs a job that is stopped after ``limit_s``
    seconds (None: no limit)."""

    def __init__(self, workers: int, task_name: str | None = None, scores: tuple[float, float] | None = None):
        self.slots = workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.task_name, self.scores = task_name, scores  # the fp32 model's, measured by the driver
        self._idle: list[_Worker] = []
        self._busy: dict[int, _Worker] = {}
        self._next = 0

    def _start(self) -> _Worker:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(theirs, self.threads, self.task_name, self.scores),
                              name="modelpress-trial")
        process.start()  # not a daemon: a trial may start processes of its own (runtime probes)
        theirs.close()
        return _Worker(process, ours)

    def submit(self, job: dict[str, Any], limit_s: float | None = None, until: float | None = None) -> int:
        """Run ``job``; stop it ``limit_s`` seconds after it starts, and in any case at ``until`` (a
        ``time.monotonic()`` value: a fresh worker loading the task must not push the job past the search's
        own deadline)."""
        worker = self._idle.pop() if self._idle else self._start()
        worker.job, worker.limit_s, worker.until, worker.started = job, limit_s, until, None
        worker.stage = ("waiting for the worker", None)
        worker.conn.send({**job, "threads": self.threads})
        self._next += 1
        self._busy[self._next] = worker
        return self._next

    def wait_one(self, handles: list[int]) -> tuple[int, dict[str, Any]]:
        from multiprocessing.connection import wait

        while True:
            now = time.monotonic()
            for handle in handles:
                end = self._end(self._busy[handle])
                if end is not None and now >= end:
                    return handle, self._stop(handle, now)
            # a worker's pipe and its process sentinel: a worker that dies before it takes the job leaves no
            # end-of-file on the pipe (the job's pipe end may still be held for it), so watch the process too
            watched = {}
            for h in handles:
                watched[self._busy[h].conn] = h
                watched[self._busy[h].process.sentinel] = h
            for ready in wait(list(watched), timeout=self._next_deadline(handles, now)):
                handle = watched[ready]
                if handle not in self._busy:
                    continue
                worker = self._busy[handle]
                try:
                    if not worker.conn.poll():
                        if worker.process.is_alive():
                            continue
                        return handle, self._lost(handle)  # exited with nothing more to say
                    kind, payload = worker.conn.recv()
                except (EOFError, OSError):  # the worker died (out of memory, a crash in native code)
                    return handle, self._lost(handle)
                if kind == "stage":
                    worker.stage = payload
                elif kind == "started":
                    worker.started = time.monotonic()
                elif kind == "done":
                    del self._busy[handle]
                    worker.job = None
                    self._idle.append(worker)
                    return handle, {**payload, "limit_s": worker.limit_s}

    @staticmethod
    def _end(worker: _Worker) -> float | None:
        """When the worker's job is stopped: its limit after it started, or its absolute end if sooner."""
        ends = [t for t in (worker.until, worker.started + worker.limit_s if worker.started is not None and
                            worker.limit_s is not None else None) if t is not None]
        return min(ends) if ends else None

    def _next_deadline(self, handles: list[int], now: float) -> float | None:
        ends = [e for e in (self._end(self._busy[h]) for h in handles) if e is not None]
        return max(0.0, min(ends) - now) if ends else None  # a message ('started', 'stage') wakes the wait too

    def _stop(self, handle: int, now: float) -> dict[str, Any]:
        worker = self._busy.pop(handle)
        _kill(worker.process)
        text, step = worker.stage
        started = worker.started if worker.started is not None else now
        own = worker.limit_s is not None and worker.started is not None and (
            worker.until is None or started + worker.limit_s <= worker.until)
        limit = worker.limit_s if own else max(0.0, (worker.until or now) - started)
        what = f"the trial time limit of {limit:.0f} s" if own else "the search's time limit"
        return {"status": "timeout", "stage": text, "step": step, "limit_s": limit,
                "stopped_by": "trial" if own else "search", "error": f"stopped at {what} while {text}",
                "ended": f"{what} reached while {text}", "seconds": {"total": now - started}}

    def _lost(self, handle: int) -> dict[str, Any]:
        worker = self._busy.pop(handle)
        worker.process.join(timeout=KILL_GRACE_S)
        text, step = worker.stage
        code = worker.process.exitcode
        error = f"the worker process died (exit code {code}) while {text}"
        return {"status": "failed", "stage": text, "step": step, "limit_s": worker.limit_s, "error": error,
                "ended": f"failed: {error}",
                "seconds": {"total": time.monotonic() - worker.started if worker.started else 0.0}}

    def close(self) -> None:
        for worker in self._idle:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in [*self._idle, *self._busy.values()]:
            worker.process.join(timeout=0 if worker.job else KILL_GRACE_S)
            _kill(worker.process)
        self._idle.clear()
        self._busy.clear()
        from .trial import remove_baseline_caches

        remove_baseline_caches()  # what workers killed at their limit could not remove themselves


def _kill(process: Any) -> None:
    if process.is_alive():
        process.terminate()
        process.join(timeout=KILL_GRACE_S)
    if process.is_alive():
        process.kill()
        process.join()
