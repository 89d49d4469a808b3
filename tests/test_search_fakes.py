"""Small stand-in techniques for the search tests, registered by the tests themselves (monkeypatch, or
``register()`` in a subprocess), so the search is tested independently of the real techniques.

- ``shrink``: splits every Linear layer with at least 16 inputs and outputs into two of rank
  ``rank_ratio`` x min(in, out) (truncated SVD): the artifact gets smaller and faster; small ranks
  cost accuracy.
- ``noise`` (``tests/test_search_fakes_noise.py``): adds Gaussian noise of ``scale`` x each weight's
  standard deviation (seeded): large scales ruin the score (hopeless candidates for the early stop).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from fnmatch import fnmatch

import torch
from torch import nn

from modelpress.compress import Applied
from modelpress.config import check

MODULE = __name__
SEARCH_SPACE = {"rank_ratio": [0.5, 0.25, 0.05]}  # for shrink; noise has its own below


@dataclass(frozen=True)
class Config:
    rank_ratio: float = 0.5
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(0 < self.rank_ratio <= 1, f"rank_ratio must be in (0, 1], got {self.rank_ratio}.")


def apply(model: nn.Module | Applied, config: Config, task, tools=None) -> Applied:
    """A shrunk copy of the model (the input is not modified), with the ranks as facts."""
    prev = Applied.of(model)
    model = copy.deepcopy(prev.model)
    ranks = {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or min(module.in_features, module.out_features) < 16:
            continue
        if (config.include and not any(fnmatch(name, p) for p in config.include)) or any(
                fnmatch(name, p) for p in config.exclude):
            continue
        r = max(1, int(config.rank_ratio * min(module.in_features, module.out_features)))
        u, s, vh = torch.linalg.svd(module.weight.detach(), full_matrices=False)
        first = nn.Linear(module.in_features, r, bias=False)
        second = nn.Linear(r, module.out_features, bias=module.bias is not None)
        with torch.no_grad():
            first.weight.copy_(s[:r, None].sqrt() * vh[:r])
            second.weight.copy_(u[:, :r] * s[:r].sqrt())
            if module.bias is not None:
                second.bias.copy_(module.bias)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], nn.Sequential(first, second))
        ranks[name] = r
    return prev.then(model, facts={"ranks": ranks})


def register(monkeypatch=None) -> None:
    """Add ``shrink`` and ``noise`` to the technique registry (through monkeypatch when given)."""
    from modelpress import registry

    table = {"shrink": MODULE, "noise": MODULE + "_noise"}
    if monkeypatch is not None:
        for k, v in table.items():
            monkeypatch.setitem(registry.TECHNIQUES, k, v)
    else:
        registry.TECHNIQUES.update(table)


def test_shrink_keeps_outputs_at_full_rank():
    from modelpress.zoo import LeNet300100

    torch.manual_seed(0)
    model = LeNet300100().eval()
    x = torch.randn(4, 1, 28, 28)
    shrunk = apply(model, Config(rank_ratio=1.0), None)
    assert isinstance(shrunk.model.net[1], nn.Sequential) and isinstance(model.net[1], nn.Linear)  # input untouched
    assert torch.allclose(shrunk.model(x), model(x), atol=1e-4)
    assert shrunk.facts["ranks"]["net.1"] == 300  # full rank of the 784 -> 300 layer
    small = apply(model, Config(rank_ratio=0.05), None).model
    assert sum(p.numel() for p in small.parameters()) < 0.2 * sum(p.numel() for p in model.parameters())
