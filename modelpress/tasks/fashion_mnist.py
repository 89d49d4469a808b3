"""``fashion-mnist``: the real Fashion-MNIST from Debian's ``dataset-fashion-mnist`` IDX files.

Three reference models, trained on first use and cached: ``lenet-300-100`` (MLP), ``lenet5`` (CNN) and
``transformer`` (the 28 rows of an image read as 28 tokens by a small transformer of width 128).
The folder is ``$MODELPRESS_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``.
"""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ModelpressError
from ..task import Batches, Task
from ..cache import TRAIN_THREADS, cached_model, fingerprint

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
SEED = 0
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def data_dir() -> Path:
    return Path(os.environ.get("MODELPRESS_FASHION_MNIST", DEFAULT_DIR))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic 0x0000 + dtype code + ndim, big-endian dims, data."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ModelpressError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ModelpressError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}.")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise ModelpressError(
        f"Fashion-MNIST file '{stem}(.gz)' not found in {folder}. Install the data with "
        f"'apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or point MODELPRESS_FASHION_MNIST at a "
        f"folder holding the four IDX files."
    )


@lru_cache(maxsize=2)
def load(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 ``[N, 1, 28, 28]`` in [0, 1] and int64 labels."""
    folder = data_dir()
    images, labels = (read_idx(_find(folder, stem)) for stem in FILES[split])
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


VAL_SAMPLES = 10_000  # held out of the 60,000 training images for validation (the test set stays 10,000)


def held_out(x: np.ndarray, y: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(train, validation): a fixed random ``VAL_SAMPLES`` of the training images for validation."""
    order = np.random.default_rng(SEED).permutation(len(y))
    val, train = np.sort(order[:VAL_SAMPLES]), np.sort(order[VAL_SAMPLES:])
    return (x[train], y[train]), (x[val], y[val])


def _task(model_name: str, build, epochs: int, lr: float, rows_as_tokens: bool = False) -> Task:
    from ..train import TrainConfig, fit

    (x_train, y_train), (x_val, y_val) = held_out(*load("train"))
    x_test, y_test = load("test")
    if rows_as_tokens:  # [N, 1, 28, 28] -> [N, 28, 28]: a sequence of 28 rows of 28 pixels
        x_train, x_val, x_test = x_train[:, 0], x_val[:, 0], x_test[:, 0]
    train = Batches({"x": x_train}, y_train, batch_size=128, shuffle=True, seed=SEED)
    config = TrainConfig(epochs=epochs, lr=lr, seed=SEED, threads=TRAIN_THREADS)

    def build_model():
        return cached_model(f"fashion-mnist-{model_name}", build,
                            lambda m: fit(m, train, config, description=f"training {model_name}"),
                            {"data": fingerprint(y_train), "config": repr(config), "version": 1}, seed=SEED)

    return Task(
        name=f"fashion-mnist:{model_name}", build_model=build_model, input_names=("x",), output_names=("logits",),
        calib_data=Batches({"x": x_train[:512]}, batch_size=64),
        val_data=Batches({"x": x_val}, y_val, batch_size=256),
        test_data=Batches({"x": x_test}, y_test, batch_size=256),
        train_data=train, num_classes=10,
        preprocessing={"input": "grayscale 28x28 image scaled to [0, 1]", "layout": list(x_train.shape[1:])},
    )


def lenet5() -> Task:
    from ..zoo import LeNet5

    return _task("lenet5", LeNet5, epochs=6, lr=2e-3)


def lenet_300_100() -> Task:
    from ..zoo import LeNet300100

    return _task("lenet-300-100", LeNet300100, epochs=12, lr=1e-3)


def transformer() -> Task:
    """Fashion-MNIST read as a sequence of 28 rows of 28 pixels (input ``[N, 28, 28]``) by a pre-norm
    transformer of width 128, 2 blocks, 4 heads, FFN 512: sized so that its matrix products, not its
    per-op overhead, take most of the time at batch 32 on a CPU."""
    from functools import partial

    from ..zoo import TinyTransformer

    build = partial(TinyTransformer, features=28, seq_len=28, dim=128, depth=2, num_heads=4, ffn=512)
    return _task("transformer", build, epochs=6, lr=1e-3, rows_as_tokens=True)
