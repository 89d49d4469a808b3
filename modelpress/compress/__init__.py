"""Compression techniques. Each module exposes ``Config`` and ``apply(model, config, task, tools) -> Applied``.

``model`` is a plain ``nn.Module`` (the first step) or the :class:`Applied` of the steps before; the
technique returns a new :class:`Applied`: its model plus everything later stages need from it, as data
(facts for the result, a storage request, ONNX rewrites, training hooks). Nothing travels as attributes
on the model, and nothing a technique returns changes what an earlier step returned.

>>> import torch
>>> from modelpress.compress import Applied
>>> a = Applied.of(torch.nn.Linear(2, 2)).then(facts={"bits": 8})
>>> a.then(facts={"mode": "static"}).facts == {"bits": 8, "mode": "static"}
True
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Storage:
    """A request to store the exported artifact with a storage codec (``registry.STORAGE[encoding]``):
    after export the pipeline calls ``encode(artifact, model, options)``; runtimes load through
    ``Artifact.runnable_path()``, which decodes it."""

    encoding: str
    options: Mapping[str, Any] = field(default_factory=dict)


class OnnxRewrite(Protocol):
    """Turns the exported fp32 ONNX graph into the technique's form (e.g. int8 QDQ); returns the new graph
    and the facts it learned doing so (for the result)."""

    def __call__(self, proto: Any, task: Any) -> tuple[Any, dict[str, Any]]: ...


class TrainHook(Protocol):
    """Keeps a technique's structure intact while later steps train the model. ``before_step(model)``
    runs after backward, before the optimizer step (e.g. sum the gradients of a weight cluster into its
    centroid); ``after_step(model)`` after it (e.g. re-zero pruned weights). Both optional. Hooks find
    parameters by name, never by captured reference, so they survive a deep copy of the model."""


# (original, replacement, example input) -> latency of replacement / original on the target runtime
TimeRatio = Callable[[Any, Any, np.ndarray], float]


@dataclass(frozen=True)
class Tools:
    """What the pipeline lends a technique. ``time_ratio`` times two modules on the recipe's runtime
    (a technique never exports or benchmarks by itself); None where nothing can be timed."""

    time_ratio: TimeRatio | None = None


_KEEP: Any = object()  # `then(storage=...)` default: keep the earlier request


@dataclass(frozen=True)
class Applied:
    """A model after compression steps, with what later stages need from the steps.

    ``facts``: JSON-able facts for result.json (a later step's value for a key replaces an earlier one).
    ``storage``: how the artifact should be stored (None: as the exporter wrote it).
    ``onnx_rewrites``: applied in order to the exported ONNX graph.
    ``train_hooks``: run by ``modelpress.train.fit`` around every optimizer step of later training.
    """

    model: Any
    facts: Mapping[str, Any] = field(default_factory=dict)
    storage: Storage | None = None
    onnx_rewrites: tuple[OnnxRewrite, ...] = ()
    train_hooks: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "facts", dict(self.facts))  # a copy: the caller's mapping stays theirs

    @classmethod
    def of(cls, model: Any) -> Applied:
        """``model`` itself when it already is an Applied, else the Applied of an uncompressed model."""
        return model if isinstance(model, Applied) else cls(model)

    def then(self, model: Any = None, *, facts: Mapping[str, Any] | None = None, storage: Any = _KEEP,
             onnx_rewrites: tuple[OnnxRewrite, ...] | None = None, train_hooks: tuple[Any, ...] | None = None
             ) -> Applied:
        """The next state: a new model (default: the same), facts merged over these, and the storage,
        rewrites and hooks replaced where given."""
        return replace(self, model=self.model if model is None else model, facts={**self.facts, **(facts or {})},
                       storage=self.storage if storage is _KEEP else storage,
                       onnx_rewrites=self.onnx_rewrites if onnx_rewrites is None else tuple(onnx_rewrites),
                       train_hooks=self.train_hooks if train_hooks is None else tuple(train_hooks))

    def hook(self, kind: type) -> Any:
        """The train hook of type ``kind``, or None."""
        return next((h for h in self.train_hooks if isinstance(h, kind)), None)
