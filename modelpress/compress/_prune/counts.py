"""Parameter and multiply-accumulate counts (what a pruning result reports; speed is measured elsewhere)."""
from __future__ import annotations

import torch
from torch import nn


def params(model: nn.Module) -> int:
    """Every parameter element, zeros included."""
    return sum(p.numel() for p in model.parameters())


def nonzero_params(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def macs(model: nn.Module, example: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (torch's FLOP counter / 2; counts
    convolutions, linear layers and the matrix products inside attention; zeros are counted, as a
    dense kernel computes them)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*example)
    model.train(was_training)
    return int(counter.get_total_flops() // 2)
