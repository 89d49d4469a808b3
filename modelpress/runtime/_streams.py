"""Batch streams: one batch split across several sessions of the same artifact that run at once.

On a few-core CPU, splitting the batch gives each core whole samples to work on; splitting each
operator across cores (intra-op threads) pays a synchronisation per operator and per image, which
small int8 convolutions do not earn back (measured in ``benchmarks/quantize.py --streams``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import ModelpressError


class BatchStreams:
    """Runs ``inputs`` split along axis 0 on ``sessions`` in parallel and joins the outputs along axis 0."""

    def __init__(self, sessions: list[Any]):
        self.sessions = sessions
        self.input_names = sessions[0].input_names
        self._pool = ThreadPoolExecutor(len(sessions) - 1, thread_name_prefix="modelpress-stream")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        sizes = {int(np.shape(v)[0]) if np.ndim(v) else 1 for v in inputs.values()}
        n = sizes.pop() if len(sizes) == 1 else 1
        parts = min(len(self.sessions), n)
        if parts <= 1:
            return self.sessions[0].run(inputs)
        bounds = np.linspace(0, n, parts + 1).round().astype(int)
        shards = [{k: v[lo:hi] for k, v in inputs.items()} for lo, hi in zip(bounds[:-1], bounds[1:])]
        futures = [self._pool.submit(s.run, x) for s, x in zip(self.sessions[1:parts], shards[1:])]
        results = [self.sessions[0].run(shards[0])] + [f.result() for f in futures]
        for outs, lo, hi in zip(results, bounds[:-1], bounds[1:]):
            for i, out in enumerate(outs):
                if np.ndim(out) == 0 or np.shape(out)[0] != hi - lo:
                    raise ModelpressError(
                        f"runtime streams split the batch along axis 0, but output {i} has shape "
                        f"{list(np.shape(out))} for a part of {hi - lo} samples: this model's outputs do not carry "
                        f"the batch on axis 0. Set 'streams: 1' in the runtime block.")
        return [np.concatenate(outs, axis=0) for outs in zip(*results)]

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def __del__(self) -> None:
        self.close()
