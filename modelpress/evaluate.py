"""Score any predict function with the task's metric, and compare two models output by output.

A ``predict(inputs) -> list[np.ndarray]`` returns every output of a model (a runtime Session's ``run``, or
:func:`torch_predict`), so one metric and one comparison serve the torch model and every runtime.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import ModelpressError
from .fidelity import compare_arrays
from .task import Inputs, Predict, Task


def predict_fn(session: Any) -> Predict:
    """A Session as a ``predict(inputs) -> list[np.ndarray]`` callable (every output)."""
    return lambda inputs: list(session.run(inputs))


def torch_predict(model: Any, task: Task) -> Predict:
    from .runtime.torch import from_module

    return predict_fn(from_module(model, task.input_names))


def evaluate(predict: Predict, task: Task, data: Iterable) -> float:
    """The task's metric of ``predict`` on ``data`` (``task.val_data`` to decide, ``task.test_data`` to report)."""
    return float(task.metric(predict, data))


def compare(reference: Predict, candidate: Predict, batches: Iterable[Inputs | tuple[Inputs, Any]],
            kinds: Sequence[str], names: Sequence[str], max_batches: int = 8) -> dict[str, dict[str, Any]]:
    """Compare two models on real inputs, per output (``names``, compared by their ``kinds``).

    Every output gets ``max_abs_diff`` (largest element-wise difference) and ``cosine`` (mean cosine
    similarity of the flattened outputs per sample). ``logits`` add ``agreement`` (share of samples with the
    reference's top-1 class on top; a tie between ``k`` of the candidate's top scores counts ``1/k``, as in
    ``task.top1_credit``), ``decisive_agreement`` (the same on the samples the reference decides: its top
    class at least ``task.DECISIVE_MARGIN`` more probable than the next; None below ``task.MIN_DECISIVE`` of
    them), ``decisive_samples`` (how many) and ``top5_overlap`` (mean share of the reference's top-5 classes
    among the candidate's). ``embeddings`` add ``nn_agreement``: the share of samples whose nearest neighbour (by
    cosine, among the other compared samples) is the same for both models.
    """
    refs: list[list[np.ndarray]] = [[] for _ in names]
    outs: list[list[np.ndarray]] = [[] for _ in names]
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        inputs = batch[0] if isinstance(batch, tuple) else batch
        ref, out = reference(inputs), candidate(inputs)
        if len(ref) != len(names) or len(out) != len(names):
            raise ModelpressError(f"The models give {len(ref)} and {len(out)} outputs; the task names {len(names)} "
                                  f"({', '.join(names)}).")
        for k, (r, o) in enumerate(zip(ref, out)):
            r, o = np.asarray(r, dtype=np.float64), np.asarray(o, dtype=np.float64)
            if r.shape != o.shape:
                raise ModelpressError(f"Output '{names[k]}' shapes differ: source model {r.shape}, artifact {o.shape}.")
            if not np.isfinite(o).all():
                raise ModelpressError(f"The artifact produced NaN or Inf in output '{names[k]}' on real inputs.")
            refs[k].append(r.reshape(len(r), -1))
            outs[k].append(o.reshape(len(o), -1))
    if not refs or not refs[0]:
        raise ModelpressError("No inputs to compare the artifact with its source model.")
    return {name: compare_arrays(np.concatenate(r), np.concatenate(o), kind)
            for name, kind, r, o in zip(names, kinds, refs, outs)}


def first_output(result: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparison of the first output (the one a single-output summary shows)."""
    return next(iter(result.values()))
