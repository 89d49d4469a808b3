"""Run a runtime in a child process first, so a native crash (segfault, abort) becomes a clear error
instead of killing modelpress."""
from __future__ import annotations

import importlib
import signal
from pathlib import Path
from typing import Any

from .errors import ModelpressError


def _probe_child(conn: Any, module_name: str, folder: str, config: Any, inputs: dict) -> None:
    from . import artifact

    try:
        backend = importlib.import_module(module_name)
        session = backend.load(artifact.load(folder), config)
        outs = session.run(inputs)
        conn.send(("ok", [o.shape for o in outs]))
    except BaseException as e:  # reported to the parent, which raises the real error in-process
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def probe(art: Any, config: Any, inputs: dict, timeout_s: float = 300.0) -> None:
    """Load ``art`` on the runtime of ``config`` and run ``inputs`` once in a child process.

    Raises ModelpressError naming the signal when the child crashes or hangs; Python-level errors are
    left for the in-process load to raise with their own message.
    """
    import multiprocessing as mp

    from .registry import RUNTIMES

    module_name = RUNTIMES[config.backend].split(":")[0]
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe_child, args=(child, module_name, str(Path(art.folder)), config, inputs), daemon=True)
    proc.start()
    child.close()
    got = None
    if parent.poll(timeout_s):
        try:
            got = parent.recv()
        except EOFError:  # the child died before answering
            got = None
    proc.join(timeout=10)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if got is None:
        code = proc.exitcode
        if code is not None and code < 0:
            how = f"was killed by signal {signal.Signals(-code).name}"
        elif code is None:
            how = f"did not answer within {timeout_s:.0f} s"
        else:
            how = f"exited with code {code}"
        raise ModelpressError(
            f"The {config.backend} runtime crashed while loading or running the artifact in a child process "
            f"(it {how}). The runtime cannot run this model here: try another runtime or export format."
        )
