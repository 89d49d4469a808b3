"""``digits``: scikit-learn's bundled 8x8 handwritten digits with a small CNN (and a small transformer).

The CNN trains in well under a minute on 2 cores and reaches at least 0.97 held-out accuracy. The first
256 training images calibrate; ``unlabelled`` adds copies of them shifted by up to one pixel (and mixed up),
the classic augmentation of these digits.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..task import Batches, Task, calibration_first, chunk_seed
from ..cache import TRAIN_THREADS, cached_model, fingerprint

SEED = 0


@lru_cache(maxsize=1)
def _split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``train`` / ``val`` / ``test`` (images, labels): 20% held out for test, then 20% of the rest for
    validation (from the training side), both stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]  # [N, 1, 8, 8] in [0, 1]
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=0.2, random_state=SEED,
                                                      stratify=y_rest)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


CALIB_SAMPLES = 256  # the first training images calibrate


def nudged(images: np.ndarray, count: int, seed: int, mixup: float = 0.2) -> np.ndarray:
    """``count`` augmented copies of random ``images`` ``[N, 1, 8, 8]``: each shifted by up to one pixel
    in each direction (zeros fill in), and with probability ``mixup`` blended with a second such copy."""
    rng = np.random.default_rng(seed)

    def one() -> np.ndarray:
        image = images[rng.integers(len(images))]
        dy, dx = rng.integers(-1, 2, size=2)
        out = np.zeros_like(image)
        out[:, max(dy, 0):8 + min(dy, 0), max(dx, 0):8 + min(dx, 0)] = \
            image[:, max(-dy, 0):8 + min(-dy, 0), max(-dx, 0):8 + min(-dx, 0)]
        return out

    out = np.empty((count, *images.shape[1:]), np.float32)
    for i in range(count):
        out[i] = one()
        if rng.uniform() < mixup:
            lam = rng.uniform()
            out[i] = lam * out[i] + (1 - lam) * one()
    return out


def _task(name: str, model_name: str, build, to_input, epochs: int, lr: float) -> Task:
    from ..train import TrainConfig, fit

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (_split()[k] for k in ("train", "val", "test"))
    calib_images = x_train[:CALIB_SAMPLES]
    x_train, x_val, x_test = to_input(x_train), to_input(x_val), to_input(x_test)
    train = Batches({"x": x_train}, y_train, batch_size=32, shuffle=True, seed=SEED)
    config = TrainConfig(epochs=epochs, lr=lr, seed=SEED, threads=TRAIN_THREADS)

    def build_model():
        return cached_model(model_name, build, lambda m: fit(m, train, config, description=f"training {model_name}"),
                            {"data": fingerprint(x_train, y_train), "config": repr(config), "version": 1}, seed=SEED)

    def unlabelled(count: int, seed: int) -> Batches:  # the calibration images, then nudged copies of them
        return calibration_first({"x": x_train[:CALIB_SAMPLES]}, count,
                                 lambda n, chunk: {"x": to_input(nudged(calib_images, n, chunk_seed(seed, chunk)))}, 32)

    return Task(
        name=name, build_model=build_model, input_names=("x",), output_names=("logits",),
        calib_data=Batches({"x": x_train[:CALIB_SAMPLES]}, batch_size=32),
        val_data=Batches({"x": x_val}, y_val, batch_size=64),
        test_data=Batches({"x": x_test}, y_test, batch_size=64),
        train_data=train, num_classes=10,
        preprocessing={"input": "grayscale 8x8 digit image scaled to [0, 1]", "layout": list(x_train.shape[1:])},
        unlabelled=unlabelled,
    )


def digits() -> Task:
    """The default task: digits with a small CNN (input ``x``: ``[N, 1, 8, 8]`` float32)."""
    from ..zoo import DigitsCNN

    return _task("digits", "digits-cnn", DigitsCNN, lambda x: x, epochs=8, lr=2e-3)


def digits_transformer() -> Task:
    """Digits read as a sequence of 8 rows of 8 pixels by a small transformer (input ``[N, 8, 8]``)."""
    from ..zoo import TinyTransformer

    return _task("digits:transformer", "digits-transformer", TinyTransformer, lambda x: np.ascontiguousarray(x[:, 0]),
                 epochs=30, lr=2e-3)
