"""What a trial will cost, estimated before it starts, from the model's size and measured speed.

The driver measures a :class:`Profile` of the fp32 model once per invocation (a forward pass timed on a
calibration batch, the layer and parameter counts, the training set's size); after the fp32 trial it also
knows what exporting, scoring and timing one candidate costs (``base_s``). A technique module may define
``estimate_s(config, profile) -> float``: the seconds its ``apply`` takes with those settings on that model
(its sensitivity analyses, calibration passes, training epochs). A technique without one is estimated at
:data:`UNKNOWN_FORWARDS` forward passes over the calibration batch.

The search uses estimates to measure cheap candidates first and to leave out a step that would not end
within the trial's time limit; every outcome carries its estimate beside the time it took.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

PROFILE_BATCH = 32  # samples of the timed forward pass
UNKNOWN_FORWARDS = 20  # a technique without estimate_s: this many passes over the profile batch


@dataclass(frozen=True)
class Profile:
    """The fp32 model's size and speed, as the techniques' estimates need them."""

    params: int  # trainable parameters
    layers: int  # Linear and convolution layers (what per-layer analyses visit)
    sample_s: float  # seconds of one sample's forward pass in torch (from a timed batch of PROFILE_BATCH)
    train_samples: int  # training samples (0: the task has no training data)
    val_samples: int  # validation samples (accuracy-aware steps score on them)
    base_s: float | None = None  # one candidate's export, scoring and timing (the fp32 trial's), once known

    def forward_s(self, samples: int) -> float:
        """Seconds of a forward pass over ``samples`` samples."""
        return self.sample_s * samples

    def epoch_s(self, epochs: float = 1.0) -> float:
        """Seconds of ``epochs`` training epochs (forward and backward: about three forward passes)."""
        return 3.0 * self.sample_s * self.train_samples * epochs

    def with_base(self, base_s: float) -> Profile:
        return replace(self, base_s=base_s)


def measure_profile(model: Any, task: Any) -> Profile:
    """Time the fp32 model's forward pass on the task's calibration inputs (best of three) and count it."""
    from torch import nn

    from ..evaluate import torch_predict

    predict, inputs = torch_predict(model, task), task.example_inputs(PROFILE_BATCH)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        predict(inputs)
        best = min(best, time.perf_counter() - t0)
    layers = sum(1 for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)))
    train = getattr(task, "train_data", None)
    return Profile(params=sum(p.numel() for p in model.parameters()), layers=layers, sample_s=best / PROFILE_BATCH,
                   train_samples=train.num_samples if train is not None else 0,
                   val_samples=task.val_data.num_samples)


def step_estimate_s(name: str, settings: dict[str, Any], profile: Profile) -> float:
    """Seconds one technique's ``apply`` is expected to take with these settings on this model."""
    from .. import registry
    from ..searchconfig import technique_module

    module = registry.module("technique", name)
    config = technique_module(name).Config(**settings)
    own = getattr(module, "estimate_s", None)
    if own is None:
        return profile.forward_s(PROFILE_BATCH) * UNKNOWN_FORWARDS
    return float(own(config, profile))


def estimate_s(steps: list[tuple[str, dict[str, Any]]], profile: Profile) -> float:
    """A candidate's whole trial: its steps, then export, scoring and timing (0 until the fp32 trial ran)."""
    return sum(step_estimate_s(n, s, profile) for n, s in steps) + (profile.base_s or 0.0)
