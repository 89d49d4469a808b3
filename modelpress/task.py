"""The Task: a model to deploy, its data and how to score it.

Data are re-iterable collections of batches. An input batch is ``dict[str, np.ndarray]`` keyed by the
task's input names, so one ``predict(inputs) -> list[np.ndarray]`` callable (every output, in the task's
output order) scores the torch model and every runtime Session with the same metric.

Three splits keep the numbers honest: ``calib_data`` (inputs) calibrates, ``val_data`` decides (search choice,
early stop, sensitivity, mixed precision), ``test_data`` is scored once for the reported score.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, ModelpressError

Inputs = dict[str, np.ndarray]
Predict = Callable[[Inputs], list[np.ndarray]]  # every output of the model, in the task's output order
OUTPUT_KINDS = ("logits", "embeddings", "values")  # class scores | vectors compared by cosine | anything else


class Batches:
    """Arrays cut into batches; iterating again yields the same batches (or a new shuffle per epoch).

    >>> b = Batches({"x": np.zeros((10, 3), np.float32)}, np.arange(10), batch_size=4)
    >>> [len(t) for _, t in b]
    [4, 4, 2]
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], targets: np.ndarray | None = None,
                 batch_size: int = 64, shuffle: bool = False, seed: int = 0):
        sizes = {len(a) for a in arrays.values()} | ({len(targets)} if targets is not None else set())
        if len(sizes) != 1:
            raise ModelpressError(f"Task data arrays have different lengths {sorted(sizes)}; they must match.")
        self.arrays = dict(arrays)
        self.targets = targets
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._epoch = 0

    @property
    def num_samples(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = self.num_samples
        order = np.arange(n)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self._epoch).permutation(n)
            self._epoch += 1
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            inputs = {k: v[idx] for k, v in self.arrays.items()}
            yield inputs if self.targets is None else (inputs, self.targets[idx])

    def take(self, num_samples: int) -> Batches:
        """The first ``num_samples`` samples as new Batches (for cheap evaluations)."""
        targets = None if self.targets is None else self.targets[:num_samples]
        return Batches({k: v[:num_samples] for k, v in self.arrays.items()}, targets,
                       self.batch_size, self.shuffle, self.seed)

    def inputs_only(self) -> Batches:
        return Batches(self.arrays, None, self.batch_size, self.shuffle, self.seed)

    def with_batch_size(self, batch_size: int) -> Batches:
        return Batches(self.arrays, self.targets, batch_size, self.shuffle, self.seed)


def top1_credit(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per sample: 1 when ``target`` is the only highest score, ``1/k`` when it is one of ``k`` tied highest
    scores, else 0 (the expected top-1 hit when ties are broken at random).

    Float outputs almost never tie, so this is plain top-1 accuracy for them. A model whose outputs are
    quantized (an int8 graph that also rounds its logits) can tie on a percent of samples; ``argmax`` would
    give every tie to the lowest class number, which helps or hurts by the order of the labels alone.

    >>> top1_credit(np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]), np.array([1, 1, 2]))
    array([1. , 0.5, 0. ])
    """
    scores, target = np.asarray(scores), np.asarray(target)
    top = scores == scores.max(axis=-1, keepdims=True)  # all False on a row holding NaN
    valid = (target >= 0) & (target < scores.shape[-1])
    hit = np.take_along_axis(top, np.where(valid, target, 0)[..., None].astype(np.int64), axis=-1)[..., 0] & valid
    return hit / np.maximum(top.sum(axis=-1), 1)


DECISIVE_MARGIN = 0.1  # a reference decides a sample when its top class is this much more probable than the next
MIN_DECISIVE = 10  # fewer decisive samples than this: decisive agreement is not measured (None)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of class scores: the scores themselves when every row already is a distribution
    (non-negative, summing to 1), else their softmax.

    >>> probabilities(np.array([[0.0, np.log(3.0)]])).round(2).tolist()
    [[0.25, 0.75]]
    >>> probabilities(np.array([[0.25, 0.75]])).tolist()
    [[0.25, 0.75]]
    """
    scores = np.asarray(scores, np.float64)
    if (scores >= 0).all() and np.allclose(scores.sum(-1), 1.0, atol=1e-3):
        return scores
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def decisive_agreement(scores: np.ndarray, reference: np.ndarray,
                       margin: float = DECISIVE_MARGIN) -> tuple[float | None, int]:
    """(top-1 agreement with ``reference`` on the samples it decides, how many those are).

    A sample is decided when the reference's top class is at least ``margin`` more probable than its second
    (``probabilities``). On near-ties (a photo between two dog breeds) the smallest change of arithmetic, bf16 or
    int8, flips the top class of a faithful model; there, plain top-1 agreement measures the photos, not the
    model. A model that collapsed disagrees on decided samples too. None when fewer than ``MIN_DECISIVE``
    samples are decided.

    >>> ref = np.array([[4.0, 0.0], [0.0, 4.0], [1.0, 1.01]] * 6)
    >>> decisive_agreement(ref, ref), decisive_agreement(ref[:, ::-1], ref), decisive_agreement(ref[:9], ref[:9])
    ((1.0, 12), (0.0, 12), (None, 6))
    """
    p = np.sort(probabilities(reference), axis=-1)
    decided = (p[:, -1] - p[:, -2] >= margin) if p.shape[-1] > 1 else np.ones(len(p), bool)
    n = int(decided.sum())
    if n < MIN_DECISIVE:
        return None, n
    credit = top1_credit(np.asarray(scores)[decided], np.asarray(reference)[decided].argmax(-1))
    return float(credit.mean()), n


def accuracy(predict: Predict, data: Iterable[tuple[Inputs, np.ndarray]]) -> float:
    """Top-1 accuracy of the first output over labelled batches; a sample whose highest score is tied between
    ``k`` classes counts ``1/k`` when its label is among them (``top1_credit``)."""
    correct, total = 0.0, 0
    for inputs, target in data:
        correct += float(top1_credit(predict(inputs)[0], target).sum())
        total += len(target)
    if total == 0:
        raise ModelpressError("The evaluation data is empty: the task needs at least one labelled sample.")
    return correct / total


@dataclass(frozen=True)
class Task:
    """A model plus data and metric. ``build_model`` returns the trained fp32 model.

    ``calib_data`` yields input batches; ``val_data``, ``test_data`` and ``train_data`` yield (inputs, target).
    Every decision reads ``val_data``; ``test_data`` is scored once, for the reported score; ``unlabelled``
    (optional) makes more training inputs from the calibration data, never from validation or test. ``metric``
    receives a ``predict`` that returns every output. ``output_kinds`` says, per output, how to compare two
    models' outputs: ``logits`` (top-1 agreement, top-5 overlap), ``embeddings`` (cosine, nearest-neighbour
    agreement) or ``values`` (differences and cosine only).
    """

    name: str
    build_model: Callable[[], Any]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    calib_data: Batches
    val_data: Batches
    test_data: Batches
    train_data: Batches | None = None
    metric: Callable[[Predict, Iterable], float] = accuracy
    higher_is_better: bool = True
    output_kinds: tuple[str, ...] = ("logits",)
    num_classes: int | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    # (count, seed) -> ``count`` unlabelled inputs made from the calibration data alone: its inputs first, then
    # augmented copies (crops, flips, jitter, mixup of the calibration photos; word crops of the calibration
    # texts). For label-free recovery (``distill: {data: augmented}``); None: the task has only ``calib_data``.
    unlabelled: Callable[[int, int], Batches] | None = None

    def __post_init__(self) -> None:
        kinds = tuple(self.output_kinds)
        if len(kinds) == 1 and len(self.output_names) > 1:
            kinds = kinds * len(self.output_names)  # one kind given for every output
        bad = [k for k in kinds if k not in OUTPUT_KINDS]
        if bad or len(kinds) != len(self.output_names):
            raise ConfigError(f"Task '{self.name}': output_kinds must give one of {', '.join(OUTPUT_KINDS)} per output "
                              f"({len(self.output_names)} outputs: {', '.join(self.output_names)}), got {list(kinds)}.")
        object.__setattr__(self, "output_kinds", kinds)

    def example_inputs(self, batch_size: int = 1) -> Inputs:
        """Real inputs from the calibration data, tiled when the data has fewer samples."""
        arrays = self.calib_data.arrays
        n = len(next(iter(arrays.values())))
        idx = np.arange(batch_size) % n
        return {k: np.ascontiguousarray(v[idx]) for k, v in arrays.items()}

    def score_drop(self, baseline: float, score: float) -> float:
        """How much worse ``score`` is than ``baseline`` in the metric's units (positive = worse)."""
        return baseline - score if self.higher_is_better else score - baseline


AUGMENT_CHUNK = 256  # augmented inputs made per call of a task's generator (bounds the memory it needs)


def calibration_first(calib: Inputs, count: int, more: Callable[[int, int], Inputs], batch_size: int) -> Batches:
    """``count`` unlabelled inputs: the calibration inputs ``calib`` first (as many as fit), then augmented
    ones, ``AUGMENT_CHUNK`` at a time from ``more(n, chunk_index)``: what a task's ``unlabelled`` hook
    returns. ``more`` seeds each chunk from its index, so the inputs do not depend on memory or batching.

    >>> calib = {"x": np.zeros((3, 2), np.float32)}
    >>> b = calibration_first(calib, 5, lambda n, i: {"x": np.ones((n, 2), np.float32)}, batch_size=4)
    >>> b.arrays["x"][:, 0].tolist(), b.targets is None
    ([0.0, 0.0, 0.0, 1.0, 1.0], True)
    """
    if count < 1:
        raise ConfigError(f"The number of unlabelled inputs must be at least 1, got {count}.")
    first = min(count, len(next(iter(calib.values()))))
    out = {k: np.empty((count, *v.shape[1:]), v.dtype) for k, v in calib.items()}
    for k, v in calib.items():
        out[k][:first] = v[:first]
    for i, start in enumerate(range(first, count, AUGMENT_CHUNK)):
        n = min(AUGMENT_CHUNK, count - start)
        chunk = more(n, i)
        for k in out:
            out[k][start:start + n] = chunk[k]
    return Batches(out, batch_size=batch_size)


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The seed of one chunk of augmented inputs, from the hook's seed and the chunk's index."""
    return int(np.random.SeedSequence([seed % 2 ** 32, chunk_index]).generate_state(1)[0])


def split_slices(n: int, calib_samples: int) -> tuple[slice, slice, slice]:
    """(calibration, validation, test) slices of ``n`` samples in a fixed order: up to ``calib_samples`` (at
    most a quarter) for calibration, the rest halved into validation then test. Below 8 samples every
    slice is all of them (a demo, too small to hold data out).

    >>> split_slices(100, 20)
    (slice(0, 20, None), slice(20, 60, None), slice(60, 100, None))
    """
    if n < 8:
        return slice(0, n), slice(0, n), slice(0, n)
    k = min(calib_samples, n // 4)
    mid = k + (n - k) // 2
    return slice(0, k), slice(k, mid), slice(mid, n)


def load_task(name: str) -> Task:
    """A built-in task by name (``modelpress tasks`` lists them) or a user task ``module:function``.

    A user task imports ``module`` (from ``PYTHONPATH`` or the current folder) and calls ``function()``,
    which runs that code: a recipe is as trusted as the code it names. The target must be a Python
    function defined in that module (not a class, not a built-in, not from Python's standard library)
    taking no arguments, and must return a Task; anything else is a ConfigError.
    """
    import inspect
    import os
    import sys

    from .errors import shown
    from .registry import TASKS

    target = TASKS.get(name) if isinstance(name, str) else None
    if target is None:
        if not isinstance(name, str) or ":" not in name or name.startswith("fashion-mnist"):
            from .errors import unknown
            err = unknown("task", str(name), TASKS)
            raise ConfigError(f"{err} A task of your own is an import string 'my_module:my_task'.")
        target = name
    module_name, _, attr = target.partition(":")
    hint = ("A user task is 'module:function' where the module is importable (on PYTHONPATH or in the current "
            "folder) and the function takes no arguments and returns a modelpress Task.")
    if not attr.isidentifier() or not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"The task '{shown(name)}' is not an import string 'module:function'. {hint}")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise ConfigError(f"The task '{shown(name)}' names Python's standard library module '{module_name}', "
                          f"which holds no task. {hint}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # after every installed package, so the current folder shadows none
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"Cannot load the task '{shown(name)}': {shown(e, 200)}. {hint}") from None
    except Exception as e:  # the user's module failed while importing: say where
        raise ConfigError(f"Importing '{module_name}' for the task '{shown(name)}' failed: {_where(e)}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"Cannot load the task '{shown(name)}': module '{module_name}' has no '{attr}'. {hint}")
    if not inspect.isfunction(factory) or factory.__module__ != module.__name__:
        what = "a class" if inspect.isclass(factory) else f"a {type(factory).__name__}" \
            if not inspect.isfunction(factory) else f"a function defined in '{factory.__module__}'"
        raise ConfigError(f"The task '{shown(name)}' is {what}, not a function defined in '{module_name}'; "
                          f"modelpress calls only such a function. {hint}")
    try:
        inspect.signature(factory).bind()
    except TypeError:
        raise ConfigError(f"The task function '{shown(name)}' needs arguments; it must take none. {hint}") from None
    try:
        task = factory()
    except ModelpressError:
        raise
    except Exception as e:
        raise ConfigError(f"The task function '{shown(name)}' failed: {_where(e)}") from None
    if not isinstance(task, Task):
        raise ConfigError(f"The task function '{shown(name)}' returned {type(task).__name__}, not a modelpress Task.")
    return task


def _where(error: BaseException) -> str:
    """'TypeError: message (file.py, line 12)': an exception in user code, with the line that raised it."""
    import traceback

    from .errors import shown

    frames = traceback.extract_tb(error.__traceback__)
    at = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {shown(error, 300)}{at}. Fix the task's code, then run again."
