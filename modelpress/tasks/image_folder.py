"""An ImageNet-style classifier over a folder of images, as a Task.

The model is a Hugging Face image-classification folder (``save_pretrained`` output: ResNet, ViT,
ConvNeXt, MobileNet, ...), read locally without running code from it. Input ``pixel_values``
float32 ``[batch, 3, H, W]``; output ``logits``.

Preprocessing follows the folder's ``preprocessor_config.json`` where present (mean, std, size,
crop), else the ImageNet convention: shorter side resized to ``size / 0.875``, centre crop
``size`` x ``size`` (224), scaled to [0, 1] and normalised with the ImageNet mean and std.

Labels: when every image sits in a sub-folder named after a class (a name in the model's
``label2id`` or a class index), the metric is accuracy. Otherwise the targets are the fp32 model's
top-1 classes and the metric is top-1 agreement with fp32 (1.0 for the fp32 model itself).

In a recipe: ``task: my_images:task`` with ``def task(): return image_folder.task("photos/", "models/resnet")``,
or ``task: image-folder`` with ``MODELPRESS_IMAGE_DIR`` and ``MODELPRESS_IMAGE_MODEL`` (and optionally
``MODELPRESS_IMAGE_SIZE``) set in the environment.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..task import Batches, Task, accuracy, split_slices
from .hf_text import from_local_folder, require_transformers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def preprocessing(model_dir: Path, image_size: int | None) -> dict[str, Any]:
    """Resize/crop sizes in pixels and the normalisation, from preprocessor_config.json or ImageNet's."""
    cfg: dict[str, Any] = {}
    path = model_dir / "preprocessor_config.json"
    if path.is_file():
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise ModelFileError(f"{path} is not valid JSON.") from None
    size, crop = cfg.get("size"), cfg.get("crop_size")
    if image_size is not None:
        out = {"resize_shorter": round(image_size / 0.875), "crop": [image_size, image_size]}
    elif isinstance(size, dict) and "height" in size and "width" in size:  # e.g. ViT: resize, no crop
        out = {"resize": [int(size["height"]), int(size["width"])]}
    else:
        side = int(size.get("shortest_edge", 224)) if isinstance(size, dict) else int(size or 224)
        crop_side = int(crop["height"]) if isinstance(crop, dict) and "height" in crop else side
        pct = float(cfg.get("crop_pct") or 0.875)
        out = {"resize_shorter": round(crop_side / pct), "crop": [crop_side, crop_side]}
    out["mean"] = [float(v) for v in cfg.get("image_mean", IMAGENET_MEAN)]
    out["std"] = [float(v) for v in cfg.get("image_std", IMAGENET_STD)]
    return out


def load_image(path: Path, prep: dict[str, Any]) -> np.ndarray:
    """One image as float32 ``[3, H, W]``, preprocessed."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if "resize" in prep:
                h, w = prep["resize"]
                im = im.resize((w, h), Image.BILINEAR)
            else:
                scale = prep["resize_shorter"] / min(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
                ch, cw = prep["crop"]
                left, top = (im.width - cw) // 2, (im.height - ch) // 2
                im = im.crop((left, top, left + cw, top + ch))
            x = np.asarray(im, dtype=np.float32) / 255.0
    except OSError as e:
        raise ModelFileError(f"Cannot read the image {path}: {e}. Remove it from the folder or replace it.") from None
    x = (x - np.asarray(prep["mean"], np.float32)) / np.asarray(prep["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def folder_labels(files: list[Path], root: Path, label2id: dict[str, int], num_labels: int) -> np.ndarray | None:
    """Class ids from sub-folder names, or None when the folder is not laid out by class."""
    out = []
    for f in files:
        parts = f.relative_to(root).parts
        if len(parts) < 2:
            return None
        name = parts[0]
        if name in label2id:
            out.append(label2id[name])
        elif name.isdigit() and int(name) < num_labels:
            out.append(int(name))
        else:
            return None
    return np.asarray(out, dtype=np.int64)


def load_model(model_dir: Path) -> Any:
    import torch

    hf = from_local_folder("AutoModelForImageClassification", model_dir, "an image classifier")

    class ImageModel(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    return ImageModel(hf).eval()


def task(images_dir: str | Path, model_dir: str | Path, image_size: int | None = None, calib_samples: int = 64,
         batch_size: int = 32, name: str | None = None) -> Task:
    """A Task classifying every image under ``images_dir`` with the classifier in ``model_dir``."""
    transformers = require_transformers()
    root, model_dir = Path(images_dir), Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelFileError(f"{model_dir} is not a Hugging Face model folder (no config.json).")
    if not root.is_dir():
        raise ModelFileError(f"Image folder {root} does not exist.")
    if image_size is not None and image_size < 8:
        raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}.")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ConfigError(f"No images ({', '.join(sorted(EXTENSIONS))}) under {root}.")
    prep = preprocessing(model_dir, image_size)
    x = np.stack([load_image(f, prep) for f in files])
    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    labels = folder_labels(files, root, {str(k): int(v) for k, v in (config.label2id or {}).items()},
                           int(config.num_labels))
    calib, val, test = split_slices(len(files), calib_samples)

    def build_model() -> Any:
        return load_model(model_dir)

    if labels is None:  # targets: the fp32 model's own top-1 classes, so the metric is top-1 agreement
        import torch

        with torch.inference_mode():
            labels = build_model()(torch.from_numpy(x)).argmax(-1).numpy().astype(np.int64)
        labelled = False
    else:
        labelled = True
    return Task(
        name=name or f"image-folder:{root.name}", build_model=build_model, input_names=("pixel_values",),
        output_names=("logits",), calib_data=Batches({"pixel_values": x[calib]}, batch_size=batch_size),
        val_data=Batches({"pixel_values": x[val]}, labels[val], batch_size=batch_size),
        test_data=Batches({"pixel_values": x[test]}, labels[test], batch_size=batch_size),
        train_data=Batches({"pixel_values": x[calib]}, labels[calib], batch_size=batch_size, shuffle=True),
        metric=accuracy, num_classes=int(config.num_labels),
        preprocessing={"input": "RGB image", **prep, "layout": "NCHW float32",
                       "metric": "accuracy" if labelled else "top-1 agreement with the fp32 model"},
    )


def from_env() -> Task:
    """``task: image-folder``: the settings come from MODELPRESS_IMAGE_* environment variables."""
    images, model = os.environ.get("MODELPRESS_IMAGE_DIR"), os.environ.get("MODELPRESS_IMAGE_MODEL")
    if not images or not model:
        raise ConfigError("Task 'image-folder' reads its settings from the environment: set MODELPRESS_IMAGE_DIR "
                          "(a folder of images) and MODELPRESS_IMAGE_MODEL (a local Hugging Face image classifier "
                          "folder); optionally MODELPRESS_IMAGE_SIZE. Or write a task function: see docs/runtimes.md.")
    size = os.environ.get("MODELPRESS_IMAGE_SIZE")
    if size is not None and not size.isdigit():
        raise ConfigError(f"MODELPRESS_IMAGE_SIZE must be a whole number, got {size!r}.")
    return task(images, model, image_size=int(size) if size else None)
