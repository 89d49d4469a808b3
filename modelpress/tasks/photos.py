"""Real photos for the reference image models: those bundled in the scikit-image and scikit-learn wheels.

Nothing is downloaded: the files are read from the installed packages' own folders (scikit-image's
``skimage/data``, only files its wheel ships; scikit-learn's ``load_sample_images`` pair). Each source
photo gives ``len(VIEWS) * 2`` deterministic views (crops at several positions and scales, the whole
photo resized, each also mirrored), so there are a few hundred images. Splits are by source photo,
never by view, so no photo reaches two splits (the stereo pair of motorcycle photos is one source).

Images are ``uint8 [N, H, W, 3]`` RGB until ``to_input`` normalises them into a model's float32 NCHW
input; a grayscale photo is replicated to three channels.

>>> images, source = views("validation", 224)
>>> images.shape[1:], images.dtype
((224, 224, 3), dtype('uint8'))
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelFileError
from ._reference import package_file, require

# Source photos: name -> (package, files). Only real photographs (no synthetic test patterns).
SKIMAGE = "skimage"
SKLEARN = "sklearn"
PHOTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "astronaut": (SKIMAGE, ("data/astronaut.png",)),
    "brick": (SKIMAGE, ("data/brick.png",)),
    "camera": (SKIMAGE, ("data/camera.png",)),
    "cell": (SKIMAGE, ("data/cell.png",)),
    "chelsea": (SKIMAGE, ("data/chelsea.png",)),
    "clock": (SKIMAGE, ("data/clock_motion.png",)),
    "coffee": (SKIMAGE, ("data/coffee.png",)),
    "coins": (SKIMAGE, ("data/coins.png",)),
    "grass": (SKIMAGE, ("data/grass.png",)),
    "gravel": (SKIMAGE, ("data/gravel.png",)),
    "hubble": (SKIMAGE, ("data/hubble_deep_field.jpg",)),
    "ihc": (SKIMAGE, ("data/ihc.png",)),
    "microaneurysms": (SKIMAGE, ("data/microaneurysms.png",)),
    "moon": (SKIMAGE, ("data/moon.png",)),
    "motorcycle": (SKIMAGE, ("data/motorcycle_left.png", "data/motorcycle_right.png")),  # a stereo pair: one source
    "page": (SKIMAGE, ("data/page.png",)),
    "retina": (SKIMAGE, ("data/retina.jpg",)),
    "rocket": (SKIMAGE, ("data/rocket.jpg",)),
    "text": (SKIMAGE, ("data/text.png",)),
    "china": (SKLEARN, ("datasets/images/china.jpg",)),
    "flower": (SKLEARN, ("datasets/images/flower.jpg",)),
}

# Each split mixes objects, textures, microscopy and grayscale scenes. Calibration photos are also the
# only ones augmentation draws from (validation and test stay unseen by any fitting).
SPLITS: dict[str, tuple[str, ...]] = {
    "calibration": ("astronaut", "brick", "camera", "cell", "hubble", "flower"),
    "validation": ("chelsea", "china", "coins", "grass", "ihc", "moon", "page"),
    "test": ("coffee", "clock", "gravel", "microaneurysms", "motorcycle", "retina", "rocket", "text"),
}

# Views of one photo: (square side as a fraction of its shorter side, horizontal position, vertical
# position) with positions in [0, 1] (0 = left/top edge); side None = the whole photo resized to a square.
VIEWS: tuple[tuple[float | None, float, float], ...] = (
    (None, 0.5, 0.5), (1.0, 0.5, 0.5),
    (0.75, 0.5, 0.5), (0.75, 0.0, 0.0), (0.75, 1.0, 0.0), (0.75, 0.0, 1.0), (0.75, 1.0, 1.0),
    (0.5, 0.5, 0.5),
)
VIEWS_PER_IMAGE = 2 * len(VIEWS)  # each view also mirrored
INSTALL = {SKIMAGE: "pip install 'modelpress[reference]' (scikit-image)", SKLEARN: "pip install scikit-learn"}


def read_image(path: str | Path) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB (grayscale replicated, alpha dropped)."""
    require("PIL", "Reading photos", "pip install 'modelpress[reference]' (Pillow)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ModelFileError(f"The image {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ModelFileError(f"Cannot decode the image {path}: {e}.") from None


def source_files(name: str) -> list[Path]:
    """The installed files of one source photo (a clear error when the package is not installed)."""
    if name not in PHOTOS:
        raise ConfigError(f"Unknown photo {name!r}; the photos are {', '.join(sorted(PHOTOS))}.")
    package, files = PHOTOS[name]
    return [package_file(package, f, f"The photo '{name}'", INSTALL[package]) for f in files]


@lru_cache(maxsize=None)
def photo(name: str) -> tuple[np.ndarray, ...]:
    """The decoded images of one source photo (read-only arrays; decoded once per process)."""
    out = []
    for path in source_files(name):
        image = read_image(path)
        image.flags.writeable = False
        out.append(image)
    return tuple(out)


def split_names(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise ConfigError(f"Unknown split {split!r}; the splits are {', '.join(SPLITS)}.")
    return SPLITS[split]


def crop_box(width: int, height: int, side: float | None, x: float, y: float) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) in pixels of one view's crop."""
    if side is None:
        return 0, 0, width, height
    s = max(1, round(side * min(width, height)))
    left, top = round(x * (width - s)), round(y * (height - s))
    return left, top, left + s, top + s


def resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The ``box`` of ``image`` resized to ``size`` x ``size`` (Pillow bilinear, antialiased when shrinking)."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)


def image_views(image: np.ndarray, size: int) -> np.ndarray:
    """``VIEWS_PER_IMAGE`` views of one image as ``uint8 [V, size, size, 3]``: each view, then its mirror."""
    h, w = image.shape[:2]
    out = []
    for side, x, y in VIEWS:
        view = resize(image, crop_box(w, h, side, x, y), size)
        out += [view, view[:, ::-1]]
    return np.stack(out)


def views(split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every view of every photo of ``split`` at ``size`` pixels: (``uint8 [N, size, size, 3]``, the index
    into ``SPLITS[split]`` of each view's source photo)."""
    if size < 8:
        raise ConfigError(f"The image size must be at least 8 pixels, got {size}.")
    images, source = [], []
    for i, name in enumerate(split_names(split)):
        for image in photo(name):
            images.append(image_views(image, size))
            source += [i] * VIEWS_PER_IMAGE
    return np.concatenate(images), np.asarray(source, dtype=np.int64)


def to_input(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``uint8 [N, H, W, 3]`` (or float in [0, 1]) -> float32 ``[N, 3, H, W]``: ``(pixel / 255 - mean) / std``
    per channel (with pixels in [0, 255]; a float input is taken as already divided by 255)."""
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if images.dtype != np.uint8:
        x = (images.astype(np.float64) - mean64) / std64
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)
    # uint8: one table of the 256 normalised values per channel, gathered (several times faster than arithmetic)
    table = ((np.arange(256)[None, :] / 255.0 - mean64[:, None]) / std64[:, None]).astype(np.float32)  # [3, 256]
    pixels = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = np.empty(pixels.shape, np.float32)
    for c in range(3):
        np.take(table[c], pixels[:, c], out=out[:, c])
    return out


def augment(count: int, size: int, seed: int, split: str = "calibration", mixup: float = 0.2,
            jitter: float = 0.3) -> np.ndarray:
    """``count`` random augmented images of the photos of ``split`` as float32 ``[count, size, size, 3]`` in
    [0, 1]: unlabelled inputs for label-free recovery (distillation on the teacher's outputs).

    Each image is a random square crop (side 35-100% of the photo's shorter side, anywhere in the photo),
    mirrored with probability 1/2, with brightness, contrast and saturation each scaled by a factor in
    ``[1 - jitter, 1 + jitter]``; with probability ``mixup`` it is blended with a second such image
    (weight uniform in [0, 1]). The same ``seed`` gives the same images. Use ``to_input`` for a model.

    >>> x = augment(4, 32, seed=0)
    >>> x.shape, x.dtype, bool((x >= 0).all() and (x <= 1).all())
    ((4, 32, 32, 3), dtype('float32'), True)
    """
    if count < 0 or size < 8 or not 0 <= mixup <= 1 or not 0 <= jitter < 1:
        raise ConfigError(f"augment needs count >= 0, size >= 8, mixup in [0, 1] and jitter in [0, 1); got "
                          f"count={count}, size={size}, mixup={mixup}, jitter={jitter}.")
    images = [image for name in split_names(split) for image in photo(name)]
    rng = np.random.default_rng(seed)

    def one() -> np.ndarray:
        image = images[rng.integers(len(images))]
        h, w = image.shape[:2]
        box = crop_box(w, h, float(rng.uniform(0.35, 1.0)), float(rng.uniform()), float(rng.uniform()))
        x = resize(image, box, size).astype(np.float32) / 255.0
        if rng.uniform() < 0.5:
            x = x[:, ::-1]
        brightness, contrast, saturation = rng.uniform(1 - jitter, 1 + jitter, size=3)
        x = x * brightness
        x = (x - x.mean()) * contrast + x.mean()
        gray = x.mean(axis=2, keepdims=True)
        x = (x - gray) * saturation + gray
        return np.clip(x, 0.0, 1.0)

    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        x = one()
        if rng.uniform() < mixup:
            lam = rng.uniform()
            x = lam * x + (1 - lam) * one()
        out[i] = x
    return out
