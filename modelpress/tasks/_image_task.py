"""An ImageNet classifier over the bundled photos as a Task, without labels.

The photos have no ImageNet labels, so the targets of validation and test are the fp32 model's own
top-1 classes and ``accuracy`` is top-1 agreement with fp32 (1.0 for the fp32 model itself). Those
targets cost one fp32 pass over validation and test; they are cached on disk keyed by the weights
file, the images and the torch version, so loading the task again is quick. There is no training data;
``unlabelled`` makes augmented inputs from the calibration photos for label-free recovery (distillation).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..task import Batches, Inputs, Task, accuracy, calibration_first, chunk_seed
from . import photos
from ..cache import cached_array, file_digest, fingerprint

BATCH_SIZE = 32
NUM_CLASSES = 1000  # ImageNet-1k
TARGETS_VERSION = 2  # bump when the way targets are computed changes


def top1(model: Any, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """The model's top-1 class per sample, int64 ``[N]``."""
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            out.append(model(torch.from_numpy(x[start:start + batch_size])).argmax(-1).numpy())
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def augmented_photos(calib: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                     batch_size: int = BATCH_SIZE) -> Callable[[int, int], Batches]:
    """A task's ``unlabelled(count, seed)`` hook: the calibration inputs ``calib`` (float32 NCHW), then
    ``photos.augment`` images of the calibration photos (never validation or test), normalised like
    ``calib``. The same seed gives the same inputs."""

    def unlabelled(count: int, seed: int) -> Batches:
        def more(n: int, chunk: int) -> Inputs:
            images = photos.augment(n, size, chunk_seed(seed, chunk), split="calibration")
            return {"pixel_values": photos.to_input(images, mean, std)}

        return calibration_first({"pixel_values": calib}, count, more, batch_size)

    return unlabelled


def image_task(name: str, build_model: Callable[[], Any], weights: Path, size: int, mean: Sequence[float],
               std: Sequence[float], description: str, batch_size: int = BATCH_SIZE) -> Task:
    """``name``'s Task: calibration, validation and test views of the bundled photos at ``size`` pixels,
    normalised as ``(pixel / 255 - mean) / std``; targets from the fp32 model (cached)."""
    import torch

    calib, _ = photos.views("calibration", size)
    val, _ = photos.views("validation", size)
    test, _ = photos.views("test", size)
    x_val, x_test = photos.to_input(val, mean, std), photos.to_input(test, mean, std)
    key = {"weights": file_digest(weights), "images": fingerprint(val, test), "size": size, "mean": list(mean),
           "std": list(std), "torch": torch.__version__, "version": TARGETS_VERSION}
    targets = cached_array(f"{name}-top1", key, lambda: top1(build_model(), np.concatenate([x_val, x_test])))
    x_calib = photos.to_input(calib, mean, std)
    split_sizes = {s: len(photos.SPLITS[s]) for s in photos.SPLITS}
    return Task(
        name=name, build_model=build_model, input_names=("pixel_values",), output_names=("logits",),
        calib_data=Batches({"pixel_values": x_calib}, batch_size=batch_size),
        val_data=Batches({"pixel_values": x_val}, targets[:len(x_val)], batch_size=batch_size),
        test_data=Batches({"pixel_values": x_test}, targets[len(x_val):], batch_size=batch_size),
        train_data=None, metric=accuracy, higher_is_better=True, output_kinds=("logits",), num_classes=NUM_CLASSES,
        preprocessing={"input": "RGB photo", "model": description, "resize": [size, size],
                       "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                       "normalisation": "(pixel / 255 - mean) / std", "layout": "NCHW float32",
                       "data": f"views of the photos bundled with scikit-image and scikit-learn, split by source "
                               f"photo ({split_sizes['calibration']}/{split_sizes['validation']}/"
                               f"{split_sizes['test']} photos for calibration/validation/test)",
                       "metric": "top-1 agreement with the fp32 model"},
        unlabelled=augmented_photos(x_calib, size, mean, std, batch_size),
    )
