"""Where trials run: inline (one worker), in worker processes on this machine, or as Ray tasks.

Every runner has the same three calls: ``submit(job, limit_s=None, until=None) -> handle``, ``wait_one(handles) -> (handle,
outcome)`` and ``close()``; ``slots`` says how many jobs may run at once. A job and its outcome are
plain data (see :mod:`trial`), so nothing but the job crosses a process or machine boundary.
"""
from __future__ import annotations

import os
import socket
from typing import Any

from ..errors import ModelpressError
from .trial import run_job


class InlineRunner:
    """One job at a time in this process (no start-up cost; used for ``workers: 1``)."""

    def __init__(self) -> None:
        self.slots = 1
        self._jobs: dict[int, dict[str, Any]] = {}
        self._next = 0

    def submit(self, job: dict[str, Any], limit_s: float | None = None, until: float | None = None) -> int:
        self._next += 1
        self._jobs[self._next] = job
        return self._next

    def wait_one(self, handles: list[int]) -> tuple[int, dict[str, Any]]:
        handle = handles[0]
        return handle, run_job(self._jobs.pop(handle))

    def close(self) -> None:
        self._jobs.clear()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class PoolRunner:
    """``workers`` processes on this machine (spawned, so no state is shared by accident)."""

    def __init__(self, workers: int):
        self.slots = workers
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self._pool = self._start()

    def _start(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.slots, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))

    def submit(self, job: dict[str, Any], limit_s: float | None = None, until: float | None = None) -> Any:
        return self._pool.submit(run_job, {**job, "threads": self.threads})

    def wait_one(self, handles: list[Any]) -> tuple[Any, dict[str, Any]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        handle = next(iter(done))
        try:
            return handle, handle.result()
        except BrokenProcessPool as e:  # a worker died (out of memory, a crash in native code)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return handle, {"status": "failed", "error": f"the worker process died while running this trial ({e})"}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A clear error when nothing listens at a Ray address ``host:port`` (or ``ray://host:port``)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ModelpressError(
            f"'{address}' is not a Ray address. Give the head node as HOST:PORT (e.g. 127.0.0.1:6379, printed "
            f"by 'ray start --head'), 'auto' for the cluster this machine belongs to, or 'local' to start one here.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ModelpressError(
            f"Cannot reach a Ray cluster at {address}: {e.strerror or e}. Start one with 'ray start --head' on "
            f"that machine and pass the address it prints, or run without --ray to use local worker processes."
        ) from None


class RayRunner:
    """Trials as Ray tasks on the cluster at ``address`` (one CPU each)."""

    def __init__(self, address: str, workers: int):
        try:
            import ray
        except ImportError:
            raise ModelpressError("--ray needs the 'ray' package: pip install 'modelpress[search]'.") from None
        if address not in ("auto", "local"):
            check_reachable(address)
        self._owned = not ray.is_initialized()
        if self._owned:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
            try:
                if address == "local":
                    ray.init(num_cpus=os.cpu_count(), **kwargs)
                else:
                    ray.init(address=address, **kwargs)
            except Exception as e:
                raise ModelpressError(f"Cannot connect to the Ray cluster at {address}: {str(e)[:300]}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = workers if workers > 1 else max(1, cpus)
        self._ray = ray
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_job)

    def submit(self, job: dict[str, Any], limit_s: float | None = None, until: float | None = None) -> Any:
        return self._remote.remote({**job, "threads": 1})

    def wait_one(self, handles: list[Any]) -> tuple[Any, dict[str, Any]]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        handle = ready[0]
        try:
            return handle, self._ray.get(handle)
        except Exception as e:  # the task's node or worker died
            return handle, {"status": "failed", "error": f"the Ray task failed: {str(e)[:500]}"}

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()


def make_runner(workers: int, ray_address: str | None, limited: bool = False, task_name: str | None = None,
                scores: tuple[float, float] | None = None) -> Any:
    """The runner for these settings. Trials with a time limit run in worker processes that can be stopped
    (:class:`workers.ProcessRunner`); Ray tasks are not stopped at the limit (the log says so)."""
    if ray_address:
        if limited:
            from ..progress import log

            log.info("trial time limits are not enforced on Ray tasks: a trial there runs to its end")
        return RayRunner(ray_address, workers)
    if limited:
        from .workers import ProcessRunner

        return ProcessRunner(workers, task_name, scores)
    return InlineRunner() if workers == 1 else PoolRunner(workers)
