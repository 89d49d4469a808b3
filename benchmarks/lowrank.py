"""Low-rank factorization against fp32 on ONNX Runtime: parameters, score before and after recovery,
latency at batch 1 and 32, and beside each the dense reconstruction (the same ranks, but every W
replaced by its approximation in place: the same accuracy as the split before recovery, no saving).

    python benchmarks/lowrank.py [--json rows.json] [--quick] [--threads 2] [--streams 1] [--spinning]

Cases: fashion-mnist lenet-300-100 and lenet5 (every eligible layer; ranks by sensitivity under a global
budget of parameters or MACs), the digits transformer (width 64, 8 tokens) with its FFN layers, its attention
projections, and both, and the fashion-mnist transformer (width 128, 28 tokens) with its FFN layers and with
FFN and attention together. Rows per case:

- ``lowrank``: the split model straight after factorization (no training, and ``refit: false``: the
  factorization itself, whose accuracy the dense reconstruction shares);
- ``lowrank+recover``: the same split after ``recover_epochs`` of fine-tuning with distillation from
  the fp32 model (the step's own recovery);
- ``dense-reconstruction``: the fp32 model with the same ranks applied to W in place.

Extra columns: ``param_ratio`` (model parameters after / before), ``layer_param_ratio`` (parameters of
the selected layers after / before), ``layer_time_share`` (share of the fp32 model's kernel time at batch 32
in the selected layers, from ONNX Runtime's profiler: the most that splitting them can save), ``recover_epochs``, ``layers`` (methods and rank ranges; the JSON
rows also hold ``ranks`` per layer).
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from common import (bench_config, emit, latency_ratios, onnx_session, ort_args, ort_config, ort_title, parser, row,
                    score_session, tempdir)

from modelpress.compress import lowrank
from modelpress.compress._lowrank_layers import approximation
from modelpress.task import load_task

FFN = ("blocks.*.ffn.*",)
ATTENTION = ("blocks.*.attn.*",)
CASES = (
    ("fashion-mnist:lenet-300-100", "params budget 0.4", lowrank.Config(param_ratio=0.4, recover_epochs=1)),
    ("fashion-mnist:lenet5", "params budget 0.4", lowrank.Config(param_ratio=0.4, recover_epochs=1)),
    ("fashion-mnist:lenet5", "macs budget 0.4", lowrank.Config(param_ratio=0.4, budget="macs", recover_epochs=1)),
    ("digits:transformer", "ffn 0.4", lowrank.Config(include=FFN, param_ratio=0.4, recover_epochs=5)),
    ("digits:transformer", "ffn 0.25", lowrank.Config(include=FFN, param_ratio=0.25, recover_epochs=5)),
    ("digits:transformer", "attention 0.5", lowrank.Config(include=ATTENTION, param_ratio=0.5, recover_epochs=5)),
    ("digits:transformer", "ffn+attention 0.4", lowrank.Config(include=FFN + ATTENTION, param_ratio=0.4,
                                                               recover_epochs=5)),
    ("fashion-mnist:transformer", "ffn 0.4", lowrank.Config(include=FFN, param_ratio=0.4, recover_epochs=1)),
    ("fashion-mnist:transformer", "ffn 0.25", lowrank.Config(include=FFN, param_ratio=0.25, recover_epochs=1)),
    ("fashion-mnist:transformer", "ffn+attention 0.4", lowrank.Config(include=FFN + ATTENTION, param_ratio=0.4,
                                                                      recover_epochs=1)),
)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def selected_params(model: torch.nn.Module, names: list[str]) -> int:
    return sum(count(model.get_submodule(n)) for n in names)


def summary(layers: dict) -> str:
    """'2 svd r40-80, 1 spatial r16': how many layers each method split, and their rank range."""
    by_method: dict[str, list[int]] = {}
    for info in layers.values():
        by_method.setdefault(info["method"], []).extend(info["ranks"])
    return ", ".join(f"{sum(1 for i in layers.values() if i['method'] == m)} {m} r{min(r)}-{max(r)}"
                     for m, r in by_method.items()) or "none"


def dense_reconstruction(model: torch.nn.Module, layers: dict) -> torch.nn.Module:
    """The fp32 model with each factorized layer's W replaced by its rank-limited approximation."""
    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, info in layers.items():
            module = dense.get_submodule(name)
            module.weight.copy_(approximation(module, info["method"], tuple(info["ranks"])))
    return dense


def layer_time_share(model: torch.nn.Module, onnx_path: Path, task, names: list[str], threads: int) -> float:
    """Share of the fp32 model's kernel time at batch 32 spent in the layers ``names`` (ONNX Runtime's
    profiler, the attribution ``modelpress analyze`` uses): the most that splitting them can save. The
    median of 5 profiles, seconds apart: one profile can fall into one of the machine's slow periods."""
    import statistics

    import onnx

    from modelpress.analyze.profile import profile_onnx

    proto, table = onnx.load(str(onnx_path)), {"rows": [], "modules": [n for n, _ in model.named_modules()]}
    shares = []
    for _ in range(5):
        prof = profile_onnx(proto, task, table, (32,), runs=90, threads=threads)["batches"]["32"]
        shares.append(sum(prof["layers"].get(n, 0.0) for n in names) / prof["kernel_us_per_run"])
        time.sleep(1.0)
    return statistics.median(shares)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--case", action="append", help="run only cases whose 'task (scope)' contains this text")
    ort_args(p)
    args = p.parse_args()
    # Factorization and recovery are small; one torch thread avoids oversubscribing a shared 2-core machine.
    # ONNX Runtime sessions use their own pool (--threads).
    torch.set_num_threads(1)
    config_bench = bench_config(args)
    rows = []
    only = [c for c in CASES if not args.case or any(k in f"{c[0]} ({c[1]})" for k in args.case)]
    for task_name, scope, config in only:
        t0 = time.perf_counter()
        task = load_task(task_name)
        fp32_model = task.build_model()
        epochs = config.recover_epochs
        # refit: false: these rows measure the factorization itself (the dense reconstruction has its accuracy)
        applied = lowrank.apply(fp32_model, lowrank.Config(**{**_fields(config), "recover_epochs": 0, "refit": False}),
                                task)
        split, info = applied.model, applied.facts
        recovered = copy.deepcopy(split)
        lowrank.fine_tune_from(recovered, copy.deepcopy(fp32_model), task,
                               lowrank.Config(**{**_fields(config), "recover_epochs": epochs}))
        names = [n for n, _ in fp32_model.named_modules()
                 if n in info["lowrank_layers"] or n in info["lowrank_skipped"]]
        candidates = {"lowrank": split, "lowrank+recover": recovered,
                      "dense-reconstruction": dense_reconstruction(fp32_model, info["lowrank_layers"])}
        with tempdir() as tmp:
            base, base_size = onnx_session(fp32_model, task, Path(tmp) / "fp32", ort_config(args))
            fp32_score = score_session(base, task)
            time_share = layer_time_share(fp32_model, Path(tmp) / "fp32" / "model.onnx", task, names, args.threads)
            for label, model in candidates.items():
                session, size = onnx_session(model, task, Path(tmp) / label, ort_config(args))
                rows.append(row(
                    f"{task_name} ({scope})", label, score_session(session, task), fp32_score, size, base_size,
                    latency_ratios(session, base, task, config_bench),
                    param_ratio=round(count(model) / count(fp32_model), 4),
                    layer_param_ratio=round(selected_params(model, names) / selected_params(fp32_model, names), 4),
                    layer_time_share=round(time_share, 3), recover_epochs=epochs if label == "lowrank+recover" else 0,
                    layers=summary(info["lowrank_layers"]), ranks=info["ranks"]))
        print(f"{task_name} ({scope}) done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    emit(rows, args, f"Low-rank factorization on ONNX Runtime, {ort_title(args)} (ratios against fp32)",
         ("param_ratio", "layer_param_ratio", "layer_time_share", "recover_epochs", "layers"))


def _fields(config: lowrank.Config) -> dict:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


if __name__ == "__main__":
    main()
