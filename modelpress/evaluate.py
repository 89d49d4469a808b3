"""Score any predict function with the task's metric, and check an artifact against its source model."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import ModelpressError
from .task import Inputs, Predict, Task, top1_credit


def predict_fn(session: Any) -> Predict:
    """The first output of a Session as a ``predict(inputs) -> np.ndarray`` callable."""
    return lambda inputs: session.run(inputs)[0]


def torch_predict(model: Any, task: Task) -> Predict:
    from .runtime.torch import from_module

    return predict_fn(from_module(model, task.input_names))


def evaluate(predict: Predict, task: Task, eval_data: Iterable | None = None) -> float:
    return float(task.metric(predict, task.eval_data if eval_data is None else eval_data))


def parity(reference: Predict, candidate: Predict, batches: Iterable[Inputs | tuple[Inputs, Any]],
           max_batches: int = 8) -> dict[str, float]:
    """Compare two predict functions on real inputs.

    Returns ``max_abs_diff`` (largest element-wise difference), ``agreement`` (share of samples with
    the same arg-max; a tie between ``k`` of the candidate's top scores counts ``1/k``, as in
    ``task.top1_credit``) and ``cosine`` (mean cosine similarity of the flattened outputs per sample).
    """
    max_diff, agree, cos_sum, total = 0.0, 0.0, 0.0, 0
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        inputs = batch[0] if isinstance(batch, tuple) else batch
        ref = np.asarray(reference(inputs), dtype=np.float64)
        out = np.asarray(candidate(inputs), dtype=np.float64)
        if ref.shape != out.shape:
            raise ModelpressError(f"Output shapes differ: source model {ref.shape}, artifact {out.shape}.")
        if not np.isfinite(out).all():
            raise ModelpressError("The artifact produced NaN or Inf outputs on real inputs.")
        max_diff = max(max_diff, float(np.abs(ref - out).max()))
        r, o = ref.reshape(len(ref), -1), out.reshape(len(out), -1)
        agree += float(top1_credit(o, r.argmax(-1)).sum())
        denom = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
        cos_sum += float(np.sum((r * o).sum(1) / np.maximum(denom, 1e-12)))
        total += len(ref)
    if total == 0:
        raise ModelpressError("No inputs to compare the artifact with its source model.")
    return {"max_abs_diff": max_diff, "agreement": agree / total, "cosine": cos_sum / total, "samples": total}
