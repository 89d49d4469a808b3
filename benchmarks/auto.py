"""``modelpress auto`` against each single-technique default, LeNet-5 on Fashion-MNIST.

    python benchmarks/auto.py [--json rows.json] [--quick] [--out runs/bench-auto] [--kill-after 6]

1. Search: ``modelpress auto recipes/auto_fashion.yaml`` (max_score_drop 1 point, objectives latency
   then size, 40 trials; ``--quick``: 8) in a subprocess. On a new study it is killed with SIGKILL after
   ``--kill-after`` finished trials and the same command is run again; the study must still hold every
   trial that had finished, unchanged (``resume`` in the chosen row). An output folder holding a finished
   study is reused as it is (the search is deterministic data; the timing below is redone).
2. Timing, all in one process: the fp32 model, the chosen artifact (``OUT/best/artifact``) and each
   technique alone with its default settings (quantize, prune, lowrank, cluster: ``steps: [NAME]``),
   exported for ONNX Runtime (2 threads) and timed interleaved, round by round; latency ratios are the
   median of per-round ratios to fp32. Scores on the whole test set.

Targets: the chosen candidate meets the constraint, is no worse than every default in latency (batch 32,
the search's objective) and size, and its latency is at most 0.5x fp32 at batch 32.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BENCH, QUICK, Ratios, emit, parser, row

from modelpress.bench import interleaved
from modelpress.evaluate import evaluate, predict_fn
from modelpress.recipe import load_recipe, parse_recipe
from modelpress.runtime import RuntimeConfig, open_session

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "auto_fashion.yaml"
DEFAULTS = ("quantize", "prune", "lowrank", "cluster")
MAX_SCORE_DROP = 0.01


def finished_trials(out: Path) -> dict[int, dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="modelpress-auto", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: {"state": t.state.name, "values": t.values, "params": t.params}
            for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED") or "outcome" in t.user_attrs}


def search(out: Path, trials: int, kill_after: int) -> dict:
    """Run the search (killing and resuming it once on a new study); returns the resume check."""
    cmd = [str(Path(sys.executable).parent / "modelpress"), "auto", str(RECIPE), "-o", str(out), "--trials", str(trials)]
    check_file = out.parent / f"{out.name}.resume.json"
    if (out / "study.db").exists() or kill_after <= 0:
        subprocess.run(cmd, check=True)
        return json.loads(check_file.read_text()) if check_file.exists() else {"checked": False}
    started = time.monotonic()
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        try:
            counts = json.loads((out / "result.json").read_text())["counts"]
            if counts["complete"] + counts["pruned"] + counts["failed"] >= kill_after:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    if proc.poll() is not None:
        raise SystemExit("the search ended before it could be killed; lower --kill-after")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = finished_trials(out)
    print(f"killed the search (SIGKILL) after {len(before)} finished trials, {time.monotonic() - started:.0f} s; "
          f"running the same command again")
    subprocess.run(cmd, check=True)
    after = finished_trials(out)
    lost = [n for n, t in before.items() if after.get(n) != t]
    check = {"checked": True, "finished_before_kill": len(before), "lost_or_changed": lost,
             "finished_after_rerun": len(after), "seconds": time.monotonic() - started}
    check_file.write_text(json.dumps(check, indent=2))
    return check


def paired(times: dict, name: str) -> float:
    """The median per-round ratio of ``name`` to fp32 in one interleaved timing."""
    return round(float(np.median([np.median(c) / np.median(b) for c, b in zip(times[name], times["fp32"])])), 4)


def default_artifact(name: str, model, task, folder: Path):
    """The technique alone with its default Config, exported as ``modelpress run`` would."""
    from modelpress.pipeline import compress, export_model

    recipe = parse_recipe({"task": task.name, "steps": [name]})
    return export_model(compress(model, task, recipe), task, recipe, folder)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-auto")
    p.add_argument("--kill-after", type=int, default=6, help="finished trials before the SIGKILL (0: no kill)")
    args = p.parse_args()
    trials = 8 if args.quick else 40
    out = args.out if not args.quick else args.out.with_name(args.out.name + "-quick")
    resume = search(out, trials, args.kill_after if not args.quick else min(args.kill_after, 3))
    summary = json.loads((out / "result.json").read_text())
    if not summary["chosen"]:
        raise SystemExit(f"no candidate met the constraints: {summary['missed_by']}")

    from modelpress import artifact as artifact_mod
    from modelpress.export import onnx as onnx_export
    from modelpress.task import load_task

    task = load_task(load_recipe(RECIPE).task)
    model = task.build_model()
    config = QUICK if args.quick else BENCH
    runtime = RuntimeConfig(threads=2)
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-auto-") as tmp:
        arts = {"fp32": onnx_export.export(model, task, Path(tmp) / "fp32"),
                "auto": artifact_mod.load(out / "best" / "artifact")}
        for name in DEFAULTS:
            print(f"building {name} with its default settings")
            arts[name] = default_artifact(name, model, task, Path(tmp) / name)
        sizes = {k: a.size_bytes for k, a in arts.items()}  # read before the temporary folder goes
        sessions = {k: open_session(a, runtime) for k, a in arts.items()}
        scores = {k: evaluate(predict_fn(s), task, task.test_data) for k, s in sessions.items()}
        print("timing every candidate interleaved with fp32")
        runs = {k: s.run for k, s in sessions.items()}
        ratios, medians = {k: Ratios() for k in sessions}, {}
        for bs in config.batch_sizes:
            times = interleaved(runs, task.example_inputs(bs), config)
            for k in sessions:
                ratios[k][str(bs)] = paired(times, k)
                medians.setdefault(k, {})[str(bs)] = round(float(np.median([x for r in times[k] for x in r])), 4)
        print("timing the smallest and largest batch again, separately (the re-timing check)")
        again = {bs: interleaved(runs, task.example_inputs(bs), config)
                 for bs in sorted({min(config.batch_sizes), max(config.batch_sizes)})}
        for k in sessions:
            ratios[k].recheck = {str(bs): paired(times, k) for bs, times in again.items()}
        ratios["fp32"] = dict(ratios["fp32"])  # 1 by definition: nothing to re-check
    fp32_size, big = sizes["fp32"], str(max(config.batch_sizes))
    labels = {"fp32": "fp32", "auto": f"auto: {summary['chosen']['candidate']}",
              **{n: f"{n} only (defaults)" for n in DEFAULTS}}
    rows = [row("fashion-mnist:lenet5", labels[k], scores[k], scores["fp32"], sizes[k], fp32_size, ratios[k],
                bytes=sizes[k], latency_ms=medians[k]) for k in arts]
    auto_row = rows[1]
    drop = scores["fp32"] - scores["auto"]
    targets = {
        "meets max_score_drop": drop <= MAX_SCORE_DROP,
        **{f"latency@{big} <= {n}": ratios["auto"][big] <= ratios[n][big] for n in DEFAULTS},
        **{f"size <= {n}": sizes["auto"] <= sizes[n] for n in DEFAULTS},
        f"latency@{big} <= 0.5x fp32": ratios["auto"][big] <= 0.5,
        "no finished trial lost after kill -9": resume.get("checked") and not resume.get("lost_or_changed"),
    }
    auto_row.update(targets=targets, resume=resume, search_trials=summary["counts"],
                    search_score=summary["chosen"]["score"], chosen_trial=summary["chosen"]["trial"])
    emit(rows, args, "modelpress auto against single-technique defaults (ONNX Runtime, 2 threads)",
         ("bytes",))
    for name, ok in targets.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(f"resume check: {resume}")


if __name__ == "__main__":
    main()
