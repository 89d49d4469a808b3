"""Per-layer sensitivity as techniques measure it: how far changing one layer moves the model's outputs.

The one probe the techniques share (quantization's mixed precision, low-rank's rank budget): run the model
on fixed calibration inputs once for the reference, then after each change, and report the relative
squared error, averaged over every output so a multi-output model is judged by all of them. (``modelpress
analyze`` measures something else on purpose: the task metric's drop on validation data.)

>>> import torch
>>> model = torch.nn.Linear(3, 2)
>>> probe = OutputProbe(model, [{"x": torch.ones(4, 3)}], ("x",))
>>> with torch.no_grad():
...     _ = model.weight.mul_(1.1)
>>> 0 < probe.error() < 1
True
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def _outputs(model: nn.Module, batches: Sequence[Mapping[str, Any]], input_names: Sequence[str]
             ) -> list[list[torch.Tensor]]:
    """Per batch, every output of ``model`` (float64)."""
    with torch.no_grad():
        out = []
        for batch in batches:
            args = [torch.as_tensor(np.asarray(batch[n])) if not isinstance(batch[n], torch.Tensor) else batch[n]
                    for n in input_names]
            y = model.eval()(*args)
            out.append([t.double() for t in (y if isinstance(y, (tuple, list)) else [y])])
    return out


def relative_error(outputs: list[list[torch.Tensor]], reference: list[list[torch.Tensor]]) -> float:
    """Mean over outputs of the squared error relative to the reference's squared magnitude."""
    per_output = []
    for k in range(len(reference[0])):
        signal = sum(float((ref[k] ** 2).sum()) for ref in reference) or 1.0
        noise = sum(float(((out[k] - ref[k]) ** 2).sum()) for out, ref in zip(outputs, reference))
        per_output.append(noise / signal)
    return float(np.mean(per_output))


class OutputProbe:
    """The model's outputs on fixed inputs (taken now, the reference), and :meth:`error`: how far the
    model's current state moves them. Change one layer, read ``error()``, change it back."""

    def __init__(self, model: nn.Module, batches: Sequence[Mapping[str, Any]], input_names: Sequence[str]):
        self.model, self.batches, self.input_names = model, list(batches), tuple(input_names)
        self.reference = _outputs(model, self.batches, self.input_names)

    def error(self) -> float:
        return relative_error(_outputs(self.model, self.batches, self.input_names), self.reference)
