"""The ``noise`` stand-in technique for the search tests (see ``test_search_fakes.py``): Gaussian noise of
``scale`` x each weight's standard deviation, seeded. Large scales ruin the score."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from modelpress.compress import Applied
from modelpress.config import check

SEARCH_SPACE = {"scale": [0.0, 0.02, 3.0]}


@dataclass(frozen=True)
class Config:
    scale: float = 0.0
    seed: int = 0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(self.scale >= 0, f"scale must be >= 0, got {self.scale}.")


def apply(model: nn.Module | Applied, config: Config, task, tools=None) -> Applied:
    """A noisy copy of the model (the input is not modified), with the scale as a fact."""
    prev = Applied.of(model)
    model = copy.deepcopy(prev.model)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * config.scale)
    return prev.then(model, facts={"noise_scale": config.scale})


def test_noise_changes_weights_only_when_asked():
    from modelpress.zoo import LeNet300100

    model = LeNet300100()
    before = model.net[1].weight.detach().clone()
    same = apply(model, Config(scale=0.0), None).model
    noisy = apply(model, Config(scale=1.0), None)
    assert torch.equal(same.net[1].weight, model.net[1].weight)
    assert not torch.equal(noisy.model.net[1].weight, model.net[1].weight)
    assert torch.equal(model.net[1].weight, before) and noisy.facts == {"noise_scale": 1.0}
