"""Compression techniques. Each module exposes ``Config`` and ``apply(model, config, task) -> nn.Module``.

A technique records what it did for the result with :func:`record`; the pipeline merges those facts
into ``result.json``.
"""
from __future__ import annotations

from typing import Any

FACTS_ATTR = "_modelpress_facts"


def record(model: Any, **facts: Any) -> None:
    """Attach result facts (JSON-able) to ``model``; later steps' facts are merged over earlier ones."""
    current = dict(getattr(model, FACTS_ATTR, {}))
    current.update(facts)
    object.__setattr__(model, FACTS_ATTR, current)


def facts(model: Any) -> dict[str, Any]:
    """The facts recorded on ``model`` by the techniques applied to it."""
    return dict(getattr(model, FACTS_ATTR, {}))


STORAGE_ATTR = "_modelpress_storage"


def set_storage(model: Any, encoding: str, **options: Any) -> None:
    """Ask for the exported artifact to be stored with a STORAGE codec (e.g. sparse or clustered weights).

    After export the pipeline calls ``registry.STORAGE[encoding].encode(artifact, model, options)``; the
    runtimes then load through ``Artifact.runnable_path()``, which decodes it.
    """
    object.__setattr__(model, STORAGE_ATTR, {"encoding": encoding, **options})


def storage(model: Any) -> dict[str, Any] | None:
    return getattr(model, STORAGE_ATTR, None)


HOOKS_ATTR = "_modelpress_train_hooks"


def add_train_hook(model: Any, hook: Any) -> None:
    """Keep a technique's structure intact while later steps train the model.

    ``hook`` may define ``before_step(model)`` (after backward, before the optimizer step: e.g. sum the
    gradients of a weight cluster into its centroid) and ``after_step(model)`` (e.g. re-zero pruned
    weights). Hooks find parameters by name, never by captured reference, so they survive deepcopy.
    The shared training loop (``_train.fit``) calls them on every step.
    """
    object.__setattr__(model, HOOKS_ATTR, [*getattr(model, HOOKS_ATTR, []), hook])


def train_hooks(model: Any) -> list[Any]:
    return list(getattr(model, HOOKS_ATTR, []))
