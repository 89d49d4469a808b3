"""Runtime sessions: one interface, ``Session.run(inputs: dict[str, np.ndarray]) -> list[np.ndarray]``.

Each backend module has ``FORMATS`` (artifact formats it runs), ``available() -> bool``, ``why_unavailable()``
and ``load(artifact, config) -> Session``. :func:`open_session` checks all of that with clear errors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from ..config import check
from ..errors import ModelpressError, RuntimeUnavailable


class Session(Protocol):
    input_names: tuple[str, ...]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


SPINNING = ("onnxruntime", "onnxruntime_cuda", "tensorrt")  # the runtimes that honour RuntimeConfig.spinning
STREAMS = ("onnxruntime",)  # CPU runtimes measured to run RuntimeConfig.streams sessions in parallel (GIL released)


@dataclass(frozen=True)
class RuntimeConfig:
    backend: str = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 2
    precision: Literal["fp32", "fp16", "bf16", "int8", "auto"] = "fp32"
    # ONNX Runtime: idle worker threads spin while waiting for work (ONNX Runtime's own default). Lower
    # latency for small models on few cores, CPU burned while idle; off here by default so that sessions
    # timed interleaved in one process measure the models rather than each other's spinning threads.
    spinning: bool = False
    # Split each batch into up to ``streams`` parts that run at once, each on its own session with
    # threads / streams intra-op threads (data parallelism across the batch instead of inside each
    # operator). A batch of 1 runs on one stream. Outputs must carry the batch on axis 0.
    streams: int = 1

    def __post_init__(self) -> None:
        from ..registry import RUNTIMES
        from ..errors import unknown

        if self.backend not in RUNTIMES:
            raise unknown("runtime", self.backend, RUNTIMES)
        check(self.threads >= 1, f"threads must be at least 1, got {self.threads}.")
        check(not self.spinning or self.backend in SPINNING,
              f"spinning is an ONNX Runtime setting ({', '.join(SPINNING)}); the {self.backend} runtime has no such "
              f"switch. Remove 'spinning' from the runtime block.")
        check(self.streams >= 1, f"streams must be at least 1, got {self.streams}.")
        check(self.streams == 1 or self.backend in STREAMS,
              f"streams is supported on the {', '.join(STREAMS)} runtime; the {self.backend} runtime has no "
              f"parallel batch streams here. Remove 'streams' from the runtime block.")
        check(self.threads % self.streams == 0,
              f"threads ({self.threads}) must be a multiple of streams ({self.streams}): each stream gets "
              f"threads / streams intra-op threads.")


def setting_label(threads: int, streams: int = 1, spinning: bool = False) -> str:
    """'2 threads, 2 streams, spinning': a runtime setting, for titles and reports."""
    return ", ".join([f"{threads} threads", *([f"{streams} streams"] if streams > 1 else []),
                      *(["spinning"] if spinning else [])])


def open_session(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> Session:
    from .. import registry

    backend = registry.module("runtime", config.backend)
    if artifact.format not in backend.FORMATS:
        raise ModelpressError(
            f"The {config.backend} runtime runs {', '.join(backend.FORMATS)} artifacts, not '{artifact.format}'. "
            f"Choose an export format it runs, or another runtime."
        )
    if not backend.available():
        raise RuntimeUnavailable(f"The {config.backend} runtime is not usable here: {backend.why_unavailable()}")
    if config.streams == 1:
        return backend.load(artifact, config)
    from dataclasses import replace

    from ._streams import BatchStreams

    one = replace(config, threads=config.threads // config.streams, streams=1)
    return BatchStreams([backend.load(artifact, one) for _ in range(config.streams)])


def check_inputs(inputs: dict[str, np.ndarray], spec: dict[str, dict[str, Any]]) -> None:
    """Compare inputs with the manifest's input spec; say which input is wrong and what was expected."""
    missing = [n for n in spec if n not in inputs]
    if missing:
        raise ModelpressError(f"Missing model input(s) {missing}; the model expects {list(spec)}.")
    for name, want in spec.items():
        got = inputs[name]
        shape = want.get("shape", [])
        ok_rank = len(got.shape) == len(shape)
        ok_dims = ok_rank and all(isinstance(d, str) or d == g for d, g in zip(shape, got.shape))
        if not ok_dims:
            raise ModelpressError(f"Input '{name}' has shape {list(got.shape)}, but the model expects {shape}.")
        if want.get("dtype") and str(got.dtype) != want["dtype"]:
            raise ModelpressError(f"Input '{name}' has dtype {got.dtype}, but the model expects {want['dtype']}.")


def importable(module: str) -> bool:
    """Whether a runtime's library imports here (a broken installation counts as absent)."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True
