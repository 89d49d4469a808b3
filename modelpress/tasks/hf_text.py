"""A Hugging Face model folder as a Task: text in, logits or embeddings out (``pip install modelpress[hf]``).

The folder is what ``save_pretrained`` writes (``config.json``, weights, tokenizer files); it is read
locally, never from the hub, and never runs code from the folder (``trust_remote_code=False``).
Texts come from a file: ``.txt`` (one text per line) or ``.jsonl`` (``{"text": ..., "label": ...}``).
Inputs are ``input_ids`` and ``attention_mask`` (int64, ``[batch, max_length]``).

Label-free recovery (``unlabelled``) trains on the calibration texts and on random word crops of them
(``text_variants``): no text that is not in the calibration split.

The metric: accuracy when labels are given (a labels file with one class per line, or ``label`` in
the JSONL; names are mapped through the model's ``label2id``); otherwise the mean cosine similarity
of each output row to the fp32 model's output (1.0 for the fp32 model itself).

In a recipe (see docs/runtimes.md): a module of your own, ``task: my_texts:task`` with

    def task():
        from modelpress.tasks.hf_text import task
        return task("models/my-bert", "data/texts.txt", labels="data/labels.txt")

or the built-in ``task: hf-text``, which reads ``MODELPRESS_HF_MODEL``, ``MODELPRESS_HF_TEXTS`` and
optionally ``MODELPRESS_HF_LABELS``, ``MODELPRESS_HF_OUTPUT`` (logits | embeddings) and
``MODELPRESS_HF_MAX_LENGTH`` from the environment.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ConfigError, ModelFileError, RuntimeUnavailable
from ..cache import cached_array, fingerprint, folder_digest
from ..task import Batches, Inputs, Task, accuracy, calibration_first, chunk_seed, split_slices

Output = Literal["auto", "logits", "embeddings"]


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise RuntimeUnavailable("Hugging Face tasks need the 'transformers' package: "
                                 "install it with 'pip install modelpress[hf]'.") from None
    return transformers


def from_local_folder(auto_class: str, model_dir: Path, what: str) -> Any:
    """``transformers.<auto_class>.from_pretrained`` on a local folder only, never running the folder's own code,
    with exportable (eager) attention; a folder it cannot load is a ModelFileError naming ``what`` was wanted.
    A folder saved after channel pruning (``modelpress_pruning`` in config.json) loads via ``prune.from_pretrained``."""
    auto = getattr(require_transformers(), auto_class)
    try:
        if '"modelpress_pruning"' in (model_dir / "config.json").read_text(encoding="utf-8"):
            from ..compress import prune  # saved after channel pruning: the config holds the original and the cuts

            return prune.from_pretrained(model_dir, auto_class, attn_implementation="eager")
        return auto.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False,
                                    attn_implementation="eager")  # exportable attention (no fused SDPA kernels)
    except Exception as e:
        raise ModelFileError(f"Cannot load {what} from {model_dir}: {str(e).splitlines()[0][:300]}") from None


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file (blank lines are skipped); a line that is not valid UTF-8 is an
    error naming the file and the line."""
    out = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} line {number} is not valid UTF-8 (byte {e.start + 1} of the line): save the "
                              f"file as UTF-8.") from None
        if line.strip():
            out.append(line)
    return out


def read_texts(path: str | Path, labels: str | Path | list | None = None) -> tuple[list[str], list | None]:
    """Texts (and labels) from a .txt or .jsonl file; labels may be a file with one label per line."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Texts file {path} does not exist: give a .txt file (one text per line) or .jsonl.")
    lines = read_lines(path)
    found: list | None = None
    if path.suffix == ".jsonl":
        rows = []
        for i, ln in enumerate(lines, 1):
            try:
                row = json.loads(ln)
                rows.append((str(row["text"]), row.get("label")))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ConfigError(f"{path} line {i} is not a JSON object with a 'text' field.") from None
        lines = [t for t, _ in rows]
        if all(lab is not None for _, lab in rows):
            found = [lab for _, lab in rows]
    if labels is not None:
        if isinstance(labels, (str, Path)):
            if not Path(labels).is_file():
                raise ModelFileError(f"Labels file {labels} does not exist.")
            labels = [ln.strip() for ln in Path(labels).read_text(encoding="utf-8").splitlines() if ln.strip()]
        found = list(labels)
    if not lines:
        raise ConfigError(f"{path} holds no texts.")
    if found is not None and len(found) != len(lines):
        raise ConfigError(f"There are {len(lines)} texts but {len(found)} labels; give one label per text.")
    return lines, found


def label_ids(labels: list, label2id: dict[str, int], num_labels: int) -> np.ndarray:
    out = []
    for lab in labels:
        text = str(lab).strip()
        if text in label2id:
            out.append(label2id[text])
        elif text.lstrip("-").isdigit() and 0 <= int(text) < num_labels:
            out.append(int(text))
        else:
            raise ConfigError(f"Label '{text}' is neither a class index below {num_labels} nor one of the model's "
                              f"labels {sorted(label2id)}.")
    return np.asarray(out, dtype=np.int64)


def cosine_to_reference(predict: Any, data: Any) -> float:
    """Mean cosine similarity between each first-output row and the fp32 model's row (the batch targets)."""
    total, count = 0.0, 0
    for inputs, reference in data:
        out = np.asarray(predict(inputs)[0], dtype=np.float64).reshape(len(reference), -1)
        ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
        denom = np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
        total += float(((out * ref).sum(1) / denom).sum())
        count += len(ref)
    return total / max(count, 1)


def text_variants(texts: list[str], count: int, seed: int, keep: float = 0.5, drop: float = 0.1) -> list[str]:
    """``count`` variants of ``texts`` made of their own words, nothing new: each is a random text's words
    from a random start, ``keep`` to all of them in order, each then dropped with probability ``drop``
    (at least one word stays). The same seed gives the same variants.

    >>> v = text_variants(["one two three four"], 3, seed=0)
    >>> all(set(t.split()) <= {"one", "two", "three", "four"} for t in v), v == text_variants(["one two three four"], 3, seed=0)
    (True, True)
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        words = texts[rng.integers(len(texts))].split()
        n = len(words)
        length = int(rng.integers(max(1, int(np.ceil(keep * n))), n + 1)) if n else 0
        start = int(rng.integers(0, n - length + 1)) if n else 0
        span = words[start:start + length]
        kept = [w for w in span if rng.uniform() >= drop] or span[:1]
        out.append(" ".join(kept))
    return out


def load_model(model_dir: Path, output: str) -> Any:
    """The wrapped model: (input_ids, attention_mask) -> logits or mean-pooled embeddings."""
    import torch

    auto = "AutoModelForSequenceClassification" if output == "logits" else "AutoModel"
    hf = from_local_folder(auto, model_dir, "a Hugging Face model")

    class TextModel(torch.nn.Module):
        def __init__(self, model: Any):
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            if output == "logits":
                return out.logits
            hidden = out.last_hidden_state  # mean over real (unpadded) tokens
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    return TextModel(hf).eval()


def task(model_dir: str | Path, texts: str | Path, labels: str | Path | list | None = None, output: Output = "auto",
         max_length: int = 64, calib_samples: int = 64, batch_size: int = 16, name: str | None = None) -> Task:
    """A Task over a local Hugging Face model folder and a texts file."""
    transformers = require_transformers()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelFileError(f"{model_dir} is not a Hugging Face model folder (no config.json): give the folder "
                             f"that save_pretrained wrote.")
    if output not in ("auto", "logits", "embeddings"):
        raise ConfigError(f"output must be 'auto', 'logits' or 'embeddings', got {output!r}.")
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2, got {max_length}.")
    config = transformers.AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    if output == "auto":
        archs = config.architectures or []
        output = "logits" if any(a.endswith("ForSequenceClassification") for a in archs) else "embeddings"
    lines, raw_labels = read_texts(texts, labels)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                                               trust_remote_code=False)
    except Exception as e:
        raise ModelFileError(f"Cannot load the tokenizer in {model_dir}: {str(e).splitlines()[0][:300]}") from None
    enc = tokenizer(lines, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
    arrays = {k: np.ascontiguousarray(enc[k].astype(np.int64)) for k in ("input_ids", "attention_mask")}
    calib, val, test = split_slices(len(lines), calib_samples)

    def part(s: slice) -> dict[str, np.ndarray]:
        return {k: v[s] for k, v in arrays.items()}

    def build_model() -> Any:
        return load_model(model_dir, output)

    def unlabelled(count: int, seed: int) -> Batches:  # the calibration texts, then word crops of them
        def more(n: int, chunk: int) -> Inputs:
            variants = text_variants(lines[calib], n, chunk_seed(seed, chunk))
            enc = tokenizer(variants, padding="max_length", truncation=True, max_length=max_length, return_tensors="np")
            return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}

        return calibration_first(part(calib), count, more, batch_size)

    if raw_labels is not None and output == "logits":
        y = label_ids(raw_labels, {str(k): int(v) for k, v in (config.label2id or {}).items()}, config.num_labels)
        val_data, test_data = (Batches(part(s), y[s], batch_size=batch_size) for s in (val, test))
        train_data = Batches(part(calib), y[calib], batch_size=batch_size, shuffle=True)
        metric = accuracy
    else:
        if raw_labels is not None:
            raise ConfigError("Labels need a classification model (output 'logits'); this model gives embeddings.")
        import torch

        held = slice(val.start, test.stop)  # validation then test: one fp32 pass, cached

        def fp32_outputs() -> np.ndarray:  # the outputs the metric compares with
            with torch.inference_mode():
                return build_model()(*[torch.from_numpy(a) for a in part(held).values()]).float().numpy()

        key = {"model": folder_digest(model_dir), "inputs": fingerprint(*part(held).values()), "output": output,
               "torch": torch.__version__}
        ref = cached_array(f"hf-text-{model_dir.name}", key, fp32_outputs)
        cut = val.stop - val.start
        val_data = Batches(part(val), ref[:cut], batch_size=batch_size)
        test_data = Batches(part(test), ref[cut:], batch_size=batch_size)
        train_data, metric = None, cosine_to_reference
    return Task(
        name=name or f"hf-text:{model_dir.name}", build_model=build_model,
        input_names=("input_ids", "attention_mask"), output_names=(output,),
        calib_data=Batches(part(calib), batch_size=batch_size), val_data=val_data, test_data=test_data,
        train_data=train_data, metric=metric, output_kinds=(output,), num_classes=int(config.num_labels) if output == "logits" else None,
        preprocessing={"input": f"text tokenized with the tokenizer in {model_dir.name}/",
                       "max_length": max_length, "padding": "max_length", "truncation": True,
                       "output": "logits" if output == "logits" else "mean-pooled last hidden state"},
        unlabelled=unlabelled,
    )


def from_env() -> Task:
    """``task: hf-text``: the settings come from MODELPRESS_HF_* environment variables."""
    model_dir, texts = os.environ.get("MODELPRESS_HF_MODEL"), os.environ.get("MODELPRESS_HF_TEXTS")
    if not model_dir or not texts:
        raise ConfigError("Task 'hf-text' reads its settings from the environment: set MODELPRESS_HF_MODEL (a local "
                          "Hugging Face model folder) and MODELPRESS_HF_TEXTS (a .txt or .jsonl file); optionally "
                          "MODELPRESS_HF_LABELS, MODELPRESS_HF_OUTPUT (logits|embeddings), MODELPRESS_HF_MAX_LENGTH. "
                          "Or write a task function: see docs/runtimes.md.")
    length = os.environ.get("MODELPRESS_HF_MAX_LENGTH", "64")
    if not length.isdigit():
        raise ConfigError(f"MODELPRESS_HF_MAX_LENGTH must be a whole number, got {length!r}.")
    return task(model_dir, texts, labels=os.environ.get("MODELPRESS_HF_LABELS") or None,
                output=os.environ.get("MODELPRESS_HF_OUTPUT", "auto"), max_length=int(length))  # type: ignore[arg-type]
