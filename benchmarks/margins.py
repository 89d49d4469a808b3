"""How strict is top-1 agreement on the reference photos? The fp32 classifiers' decision margins on the
validation and test views, and the agreement of an artifact that changes nothing but the arithmetic.

    python benchmarks/margins.py [--json rows.json] [--markdown margins.md] [--tasks mobilenet-v2,efficientnet-lite2]
                                 [--precisions bf16] [--threads 2]

Per task and split: the number of views, the median top-1 probability of the fp32 torch model, and the share of
views whose top-1 and top-2 probabilities lie within 0.05 and within 0.1 of each other (a near-tie that any
rounding can flip). Then, per precision in ``--precisions`` that this CPU computes in, the fp32 model exported
to OpenVINO and run with that inference precision through ``pipeline.run`` (no technique step): its top-1
agreement and top-5 overlap with fp32 on validation and test, and its cosine. That is the agreement a
compressed model can be expected to lose to arithmetic alone on these photos; a constraint asking for more
cannot be met by any lossy candidate. Skipped with the reason where the CPU lacks the precision.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from common import emit, parser, tempdir

from modelpress.errors import ModelpressError
from modelpress.pipeline import run
from modelpress.recipe import parse_recipe
from modelpress.task import load_task


def margins(task: Any, split: str) -> dict[str, float]:
    """Decision margins of the fp32 torch model on one split's views."""
    import torch

    model = task.build_model().eval()
    logits = []
    with torch.no_grad():
        for inputs, _ in getattr(task, split):
            logits.append(model(*[torch.from_numpy(inputs[n]) for n in task.input_names]).numpy())
    scores = np.concatenate(logits)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top = np.sort(probs, 1)
    gap = top[:, -1] - top[:, -2]
    return {"views": len(scores), "median_top1_prob": round(float(np.median(top[:, -1])), 3),
            "gap_below_0.05": round(float((gap < 0.05).mean()), 3), "gap_below_0.1": round(float((gap < 0.1).mean()), 3)}


def arithmetic_only(name: str, precision: str, threads: int) -> dict[str, Any]:
    """The fp32 model on OpenVINO in ``precision``: fidelity to fp32 on validation and test."""
    recipe = parse_recipe({"task": name, "steps": [], "export": {"format": "openvino"},
                           "runtime": {"backend": "openvino", "threads": threads, "precision": precision},
                           "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 1}})
    with tempdir() as tmp:
        try:
            result = run(recipe, f"{tmp}/out")
        except ModelpressError as e:
            return {"skipped": str(e).splitlines()[0]}
    (measures,) = result.fidelity.values()
    return {"val_agreement": round(result.val_score, 4), "test_agreement": round(result.score, 4),
            "test_top5_overlap": round(measures["top5_overlap"], 4), "test_cosine": round(measures["cosine"], 5)}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tasks", default="mobilenet-v2,efficientnet-lite2")
    p.add_argument("--precisions", default="bf16", help="comma-separated OpenVINO inference precisions (default bf16)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    rows = []
    for name in args.tasks.split(","):
        task = load_task(name)
        found = {split: margins(task, split) for split in ("val_data", "test_data")}
        for precision in args.precisions.split(","):
            measured = arithmetic_only(name, precision, args.threads)
            rows.append({"model": name, "candidate": f"fp32 IR on OpenVINO, precision {precision}",
                         "score": measured.get("test_agreement"), "score_drop": None, "size_ratio": None,
                         "latency_ratio": {},
                         **{f"{split[:-5]}_{k}": v for split, m in found.items() for k, v in m.items()}, **measured})
            print(rows[-1], flush=True)
    emit(rows, args, "Decision margins of the fp32 classifiers on the reference photos, and agreement lost to "
                     "arithmetic alone",
         extra_columns=("test_views", "test_median_top1_prob", "test_gap_below_0.05", "test_gap_below_0.1",
                        "val_agreement", "test_agreement", "test_top5_overlap", "test_cosine", "skipped"))


if __name__ == "__main__":
    main()
