"""Channel pruning of the reference CNNs through the pipeline, by ``round_to``: is the pruned model faster
than fp32 on ONNX Runtime? And how much of the agreement it lost does label-free distillation win back?

    python benchmarks/prune_real.py [--json rows.json] [--quick] [--tasks efficientnet-lite2,mobilenet-v2]
                                    [--round-to 1,16,auto] [--ratio 0.3] [--threads 2]
                                    [--recover yes|no|only] [--samples 2048] [--epochs 2]
                                    [--include "*.intermediate.dense"] [--refit yes|no]

MiniLM's feed-forward neurons alone, half of them: ``--tasks minilm --ratio 0.5 --round-to auto --include
"*.intermediate.dense" --recover no`` (MiniLM is timed at batch 1 and 16).

Each candidate is one ``pipeline.run`` of the recipe ``prune: {method: channel, ratio, round_to}`` (no
fine-tuning: the reference tasks have no labels; their score is top-1 agreement with the fp32 model),
exported to ONNX and timed interleaved against the fp32 ONNX model at batch 1 and 8 (16 for MiniLM) on ONNX Runtime, then
timed again against a fresh fp32 export (``latency_recheck``; ``recheck_ok``: within ±15% of the reported ratios).
Columns: ``score`` (top-1 agreement with fp32 on the test photos), latency ratios (candidate / fp32, with
the pipeline's verdict), ``macs_ratio``, and for ``auto`` the multiple chosen, the batch-1 timings of the
candidates and the seconds the choice took (``facts["prune_round_to"]``).

Re-fit (prune's default ``refit: true``; ``--refit no`` turns it off): after the cuts, the layers that lost
inputs are re-fitted by least squares to the unpruned model's outputs on the calibration inputs; ``before``
and ``after`` are then the validation score (top-1 agreement, or cosine for MiniLM) of the cut model and
of the re-fitted one (``facts["recovery"]``, ``by`` = refit), ``regained`` the share of the lost score won back.

Recovery (``--recover yes``, the default, or ``only``): per task one more candidate,
``prune {ratio} round_to auto`` then ``distill: {data: augmented, labels: false, samples, epochs}``: the
student is the pruned model, the teacher the unpruned one, and the inputs are the calibration views plus
augmented crops of the calibration photos (``Task.unlabelled``); no label and no validation or test photo
is trained on. Its columns: ``before`` and ``after``, the validation top-1 agreement with fp32 of the pruned
(and re-fitted) model before and after distilling (``facts["recovery"]``), ``regained`` (share of the lost agreement won
back), ``inputs`` (per epoch) and ``epochs``; ``score`` is the test agreement after recovery. ``--quick``
distils on 512 inputs for 1 epoch.
"""
from __future__ import annotations

import time
from pathlib import Path

from common import BENCH, emit, ort_args, parser, recheck_artifact, row, tempdir
from real_cells import big_batch

from modelpress.pipeline import run
from modelpress.recipe import parse_recipe
from modelpress.task import load_task


def recipe(task: str, ratio: float, round_to, args, recover: bool = False) -> object:
    rounds, runs = (4, 3) if args.quick else (12, 6)
    prune = {"method": "channel", "ratio": ratio, "round_to": round_to, "refit": args.refit == "yes"}
    steps: list[dict] = [{"prune": {**prune, "include": args.include} if args.include else prune}]
    if recover:
        steps.append({"distill": {"data": "augmented", "labels": False, "samples": args.samples,
                                  "epochs": args.epochs}})
    return parse_recipe({
        "task": task, "steps": steps,
        "export": {"format": "onnx"},
        "runtime": {"backend": "onnxruntime", "device": "cpu", "threads": args.threads, "streams": args.streams,
                    "spinning": args.spinning},
        "bench": {"batch_sizes": [1, big_batch(task)], "warmup": 3, "rounds": rounds, "runs_per_round": runs,
                  "min_seconds": BENCH.min_seconds if not args.quick else 0.0},
    })


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    ort_args(p)
    p.add_argument("--tasks", default="efficientnet-lite2,mobilenet-v2")
    p.add_argument("--round-to", default="1,16,auto", help="comma-separated round_to values")
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--recover", choices=("yes", "no", "only"), default="yes",
                   help="also (or only) prune round_to auto + label-free distill (default yes)")
    p.add_argument("--samples", type=int, help="distill inputs per epoch (default 2048; --quick 512)")
    p.add_argument("--epochs", type=int, help="distill epochs (default 2; --quick 1)")
    p.add_argument("--refit", choices=("yes", "no"), default="yes",
                   help="prune's re-fit of the layers that lost inputs (default yes, as prune's default)")
    p.add_argument("--include", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], default=[],
                   help="comma-separated layer patterns to prune only (prune's include), e.g. '*.intermediate.dense'")
    args = p.parse_args()
    args.samples = args.samples or (512 if args.quick else 2048)
    args.epochs = args.epochs or (1 if args.quick else 2)
    cells = [] if args.recover == "only" else [(value, False) for value in args.round_to.split(",")]
    cells += [("auto", True)] if args.recover != "no" else []
    rows = []
    for task in args.tasks.split(","):
        for value, recover in cells:
            round_to = value if value == "auto" else int(value)
            start = time.perf_counter()
            with tempdir() as tmp:
                cell = recipe(task, args.ratio, round_to, args, recover)
                result = run(cell, f"{tmp}/out")
                loaded = load_task(task)
                recheck = recheck_artifact(result.latency_ratio, Path(tmp) / "out" / "artifact", loaded.build_model(),
                                           loaded, cell, Path(tmp) / "fp32-recheck")
            chosen = result.facts.get("prune_round_to") or {}
            rec = result.facts.get("recovery") or {}
            name = f"prune {args.ratio:g} round_to {value}" + (" + refit" if args.refit == "yes" else "") + (f" include {','.join(args.include)}" if args.include else "") + (
                f" + distill (augmented {args.samples}, labels false, {args.epochs} ep)" if recover else "")
            rows.append(row(task, name, result.score, result.baseline_score,
                            result.size_bytes, result.baseline_size_bytes, result.latency_ratio,
                            verdict=result.latency_verdict,
                            macs_ratio=round(result.facts["macs_after"] / result.facts["macs_before"], 4),
                            chosen=chosen.get("value"), chosen_by=chosen.get("chosen_by"),
                            auto_timings=chosen.get("timings"), auto_seconds=chosen.get("seconds"),
                            by=rec.get("by"), before=rec.get("score_before"), after=rec.get("score_after"),
                            regained=rec.get("regained"), inputs=rec.get("inputs"), epochs=rec.get("epochs"),
                            run_seconds=round(time.perf_counter() - start, 1), notes=result.notes, **recheck))
            print(rows[-1], flush=True)
    emit(rows, args, f"Channel pruning {args.ratio:g} by round_to (and label-free recovery), ONNX Runtime "
                     f"{args.threads} threads",
         extra_columns=("macs_ratio", "chosen", "auto_seconds", "by", "before", "after", "regained", "inputs"))


if __name__ == "__main__":
    main()
