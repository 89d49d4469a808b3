"""Pruning on Fashion-MNIST LeNet-5 and LeNet-300-100, every candidate against its fp32 ONNX artifact on
ONNX Runtime, side by side in one run.

    python benchmarks/prune.py [--json rows.json] [--quick]

Candidates per model (each fine-tuned the same number of epochs after pruning):

- ``channel-50%``: structured pruning of half the channels/neurons of every layer (modelpress, L2
  importance), physically removed; plus ``channel-50%-round8`` (channel counts rounded to multiples of 8).
- ``magnitude@same``: modelpress unstructured magnitude pruning at the parameter reduction that
  ``channel-50%`` reached, stored with the ``sparse`` codec.
- ``torch-l1@same``: ``torch.nn.utils.prune.l1_unstructured`` at the same share, fine-tuned through its
  mask, then ``prune.remove`` (the common recipe: dense weights with zeros, plain ONNX file).
- ``magnitude-90%``: unstructured 90% in 3 rounds (cubic schedule), sparse codec.
- ``2:4``: N:M semi-structured sparsity, sparse codec.

Columns: score (ONNX Runtime, test set), score_drop (fp32 minus candidate, accuracy units), size_ratio
(artifact bytes / fp32 ONNX bytes), latency ratio at batch 1 and 32 (candidate / fp32, interleaved),
``params_ratio`` and ``macs_ratio`` from the technique's facts (zeros count as parameters removed,
but not as MACs removed: dense kernels compute them).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from common import bench_config, emit, latency_ratios, parser, row, score_session, tempdir

from modelpress import registry
from modelpress.compress import Applied, prune
from modelpress.compress._prune import counts
from modelpress.export import onnx as onnx_export
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.task import load_task

TASKS = ("fashion-mnist:lenet5", "fashion-mnist:lenet-300-100")
EPOCHS, QUICK_EPOCHS, QUICK_TRAIN_SAMPLES = 3, 1, 8192
LR = 1e-3


def export(model, task, folder: Path):
    """ONNX export plus the storage codec the technique asked for (``model``: an ``Applied`` or a plain model);
    (session, size_bytes)."""
    applied = Applied.of(model)
    art = onnx_export.export(applied.model, task, folder)
    if applied.storage is not None:
        codec = registry.module("storage encoding", applied.storage.encoding)
        art = codec.encode(art, applied.model, dict(applied.storage.options))
    return open_session(art, RuntimeConfig(threads=2)), art.size_bytes


def torch_l1(model, task, amount: float, epochs: int):
    """The common recipe: l1_unstructured on every conv/linear weight, fine-tune through the mask, remove."""
    import torch
    from torch.nn.utils import prune as tprune

    from modelpress.train import TrainConfig, fit

    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for m in layers:
        tprune.l1_unstructured(m, "weight", amount=amount)
    if epochs:
        fit(model, task.train_data, TrainConfig(epochs=epochs, lr=LR), description="torch l1: fine-tuning")
    for m in layers:
        tprune.remove(m, "weight")
    return model.eval()


def candidates(model, task, epochs: int):
    """(name, pruned model or Applied) for each candidate, in table order."""
    channel = prune.apply(model, prune.Config(ratio=0.5, epochs=epochs, lr=LR), task)
    reduction = channel.facts["sparsity"]
    yield "channel-50%", channel
    yield "channel-50%-round8", prune.apply(model, prune.Config(ratio=0.5, round_to=8, epochs=epochs, lr=LR), task)
    yield "magnitude@same", prune.apply(model, prune.Config(method="magnitude", ratio=reduction, epochs=epochs, lr=LR), task)
    yield "torch-l1@same", torch_l1(model, task, reduction, epochs)
    yield "magnitude-90%", prune.apply(model, prune.Config(method="magnitude", ratio=0.9, steps=3,
                                                           epochs=max(1, epochs // 3), lr=LR), task)
    yield "2:4", prune.apply(model, prune.Config(method="nm", epochs=epochs, lr=LR), task)


def main() -> None:
    args = parser(__doc__).parse_args()
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    rows = []
    for name in TASKS:
        task = load_task(name)
        if args.quick:
            task = dataclasses.replace(task, train_data=task.train_data.take(QUICK_TRAIN_SAMPLES))
        model = task.build_model()
        with tempdir() as tmp:
            base, base_size = export(model, task, Path(tmp) / "fp32")
            fp32 = score_session(base, task)
            for i, (cand, pruned) in enumerate(candidates(model, task, epochs)):
                session, size = export(pruned, task, Path(tmp) / f"c{i}")
                applied = Applied.of(pruned)
                f = applied.facts  # the torch recipe reports none: its MACs are the dense ones
                extra = {"params_ratio": round(counts.nonzero_params(applied.model) / counts.params(model), 4),
                         "macs_ratio": round(f["macs_after"] / f["macs_before"], 4) if f else 1.0}
                rows.append(row(name.split(":")[1], cand, score_session(session, task), fp32, size, base_size,
                                latency_ratios(session, base, task, bench_config(args)), epochs=epochs, **extra))
                print(rows[-1], flush=True)
    emit(rows, args, "Pruning: candidates against fp32 on ONNX Runtime", ("params_ratio", "macs_ratio", "epochs"))


if __name__ == "__main__":
    main()
