"""ONNX Runtime sessions (CPU provider; thread count from the runtime config)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelFileError
from . import RuntimeConfig, check_inputs, importable

FORMATS = ("onnx",)
EXTRA = "onnxruntime"
PACKAGE = "onnxruntime"  # what available() imports (the search checks it with find_spec)


def available() -> bool:
    return importable(PACKAGE)


def why_unavailable() -> str:
    return "onnxruntime is not installed; install it with 'pip install onnxruntime'."


def session_options(threads: int, spinning: bool = False) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # By default idle worker threads do not spin: sessions timed interleaved in one process would steal
    # each other's cores and the comparison would measure the contention, not the models.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


class OrtSession:
    def __init__(self, path: str, config: RuntimeConfig, providers: list[Any], spec: dict | None = None):
        import onnxruntime as ort

        try:
            self._sess = ort.InferenceSession(path, session_options(config.threads, config.spinning),
                                              providers=providers)
        except Exception as e:
            raise ModelFileError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0][:300]}") from None
        self.input_names = tuple(i.name for i in self._sess.get_inputs())
        self.output_names = tuple(o.name for o in self._sess.get_outputs())
        self.providers = self._sess.get_providers()
        self._spec = spec

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._spec:
            check_inputs(inputs, self._spec)
        return self._sess.run(None, {n: inputs[n] for n in self.input_names})


def load(artifact: Any, config: RuntimeConfig = RuntimeConfig()) -> OrtSession:
    from ..export.onnx import check_model

    path = artifact.runnable_path()
    check_model(path)
    return OrtSession(str(path), config, ["CPUExecutionProvider"], artifact.manifest.get("inputs"))


def op_precisions(artifact: Any, config: RuntimeConfig, modules: Any = None) -> dict[str, Any]:
    """Which ops of ``artifact`` run on int8 kernels here (``runtime.onnxruntime_ops``); empty for float graphs."""
    from .onnxruntime_ops import op_precisions as read

    return read(artifact, config, modules)


def profile_events(model: bytes, config: RuntimeConfig, inputs: dict[str, np.ndarray], runs: int) -> list[dict]:
    """ONNX Runtime's own profiler events (one per executed node and run) for ``runs`` runs of ``model`` (an
    ONNX graph's bytes) on ``inputs``, with the session settings of ``config``."""
    import json
    import tempfile
    from pathlib import Path

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="modelpress-profile-") as tmp:
        opts = session_options(config.threads, config.spinning)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "run")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, inputs)
        return json.loads(Path(sess.end_profiling()).read_text())
