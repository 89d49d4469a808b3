"""Quantization on ONNX Runtime: fp32 against every quantize mode, and against ONNX Runtime's own
``quantize_static`` / ``quantize_dynamic`` with default settings on the same model and data.

    python benchmarks/quantize.py [--json rows.json] [--quick] [--tasks digits,fashion-mnist:lenet5] [--threads 2] [--streams 1] [--spinning]
                                   [--profile] [--calib-slices K]

Scores are the task's accuracy, which counts a sample whose top score is tied between k classes as 1/k when
its label is among them (``modelpress.task.top1_credit``): a graph that rounds its logits to int8, as ORT's
quantize_static does, ties on about 1% of samples, and ``argmax`` would hand every tie to the lowest class
number. Rows (besides the common fields): ``ties`` (test samples with a tied top score),
``score_argmax`` (the accuracy with ``argmax``'s lowest-index rule instead), ``cosine`` (mean cosine
similarity of the outputs to the fp32 artifact's over the whole test set), ``int8_ops`` /
``float_ops`` / ``fallback_layers`` (what ONNX Runtime ran, read off the artifact), ``latency_verdict`` and
``why_slower`` (quantize.explain on the measured ratios). The rows ``static`` and ``static, per channel at 6 dB`` also have ``vs_ort_static``
(latency ratio to ORT's quantize_static per batch size, timed interleaved) and ``vs_ort_static_samples``: on how many test samples only ours /
only ORT's is right, with the exact two-sided sign-test (McNemar) p-value of that difference (over the
samples neither ties at the top). With ``--streams N`` (N > 1) every session splits its batches across N
sessions, and a row ``fp32, 1 stream`` times the fp32 model on one session against the N-stream fp32 (above
1: streams made fp32 faster too). ``--calib-slices K`` instead calibrates our static int8 and ORT's
quantize_static on K disjoint 512-sample slices of the training inputs and prints the sign test for each
(and how many top-1 predictions each changed from fp32's: ``flips_ours`` / ``flips_ort``), then the mean score difference over the slices in samples with its standard error, and how fp32 fares on
its closest calls (top-1 against runner-up) and under random noise added to its logits.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from common import (bench_config, emit, latency, latency_ratios, onnx_session, ort_args, ort_config, ort_title, parser,
                    row, score_session, tempdir)

from modelpress.artifact import load as load_artifact
from modelpress.artifact import write_for_task
from modelpress.compress import quantize
from modelpress.evaluate import compare, first_output, predict_fn, torch_predict
from modelpress.pipeline import export_model, runtime_fallbacks
from modelpress.recipe import parse_recipe
from modelpress.runtime import open_session
from modelpress.task import load_task, top1_credit

TASKS = ("digits", "fashion-mnist:lenet5", "fashion-mnist:lenet-300-100", "digits:transformer")
MODES = {
    "static": {"mode": "static"},
    "static, per channel everywhere": {"mode": "static", "per_channel_min_gain_db": 0.0},
    "static, per channel at 6 dB": {"mode": "static", "per_channel_min_gain_db": 6.0},
    "static, no bias correction": {"mode": "static", "bias_correction": False},
    "dynamic": {"mode": "dynamic"},
    "qat (1 epoch)": {"mode": "qat", "qat_epochs": 1},
    "mixed (max drop 0.005)": {"mode": "mixed"},
    "weight_only int8": {"mode": "weight_only", "bits": 8},
    "weight_only int4": {"mode": "weight_only", "bits": 4},
    "weight_only int4 g64": {"mode": "weight_only", "bits": 4, "group_size": 64},
    "weight_only int2 + max drop 0.01": {"mode": "weight_only", "bits": 2, "max_score_drop": 0.01},
}
# Rows timed against ORT's quantize_static too: the default, and the previous default (per channel at 6 dB),
# whose per-channel QGemm is what costs at batch 1.
AGAINST_ORT = ("static", "static, per channel at 6 dB")


def ort_quantized(kind: str, fp32_path: Path, task, folder: Path):
    """ONNX Runtime's quantize_static / quantize_dynamic with default settings, as an artifact."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_dynamic, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(task.calib_data)

        def get_next(self):
            return next(self.batches, None)

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "model.onnx"
    if kind == "static":
        quantize_static(str(fp32_path), str(out), Reader())
    else:
        quantize_dynamic(str(fp32_path), str(out))
    return write_for_task(folder, "model.onnx", "onnx", task)


def outputs(session, task) -> tuple[np.ndarray, np.ndarray]:
    """The first output over the whole test set, and the labels."""
    logits = np.concatenate([np.asarray(session.run(x)[0]) for x, _ in task.test_data])
    return logits, np.concatenate([y for _, y in task.test_data])


def correct(session, task) -> np.ndarray:
    """Per test sample: 1 right, 0 wrong, 1/k when the label is one of k tied top scores (the score's rule)."""
    return top1_credit(*outputs(session, task))


def sign_test(ours, theirs) -> dict:
    """Samples only ours / only theirs gets right, and the exact two-sided binomial p-value (McNemar), over
    the samples neither output ties at the top (those count 1/k in the score: ``tied_*`` says how many)."""
    whole = np.isin(ours, (0, 1)) & np.isin(theirs, (0, 1))
    b, c = int((whole & (ours > theirs)).sum()), int((whole & (ours < theirs)).sum())
    n, k = b + c, min(b, c)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
    return {"only_ours": b, "only_ort": c, "p_value": round(p, 4),
            "tied_ours": int((~np.isin(ours, (0, 1))).sum()), "tied_ort": int((~np.isin(theirs, (0, 1))).sum())}


def measure(name, candidate, session, size, fp32, fp32_size, fp32_score, task, config, **extra):
    cosine = first_output(compare(predict_fn(fp32), predict_fn(session), task.test_data, task.output_kinds,
                                  task.output_names, max_batches=10 ** 6))["cosine"]
    lat, verdicts = latency(session, fp32, task, config)
    logits, y = outputs(session, task)
    ties = int((~np.isin(top1_credit(logits, y), (0, 1))).sum())
    argmax = float((logits.argmax(-1) == y).mean())  # argmax's rule: a tie goes to the lowest class number
    return row(name, candidate, score_session(session, task), fp32_score, size, fp32_size, lat,
               cosine=round(cosine, 6), ties=ties, score_argmax=round(argmax, 4), latency_verdict=verdicts, **extra)


def reported_facts(q, art, runtime) -> dict:
    """The facts a run reports for a quantized artifact: the technique's, the rewrite's (in the manifest) and the
    op precisions ONNX Runtime reads off the artifact with ``runtime``'s settings (as ``pipeline.measure``)."""
    from modelpress.runtime.onnxruntime import op_precisions

    f = {**q.facts, **art.manifest.get("facts", {}),
         **op_precisions(art, runtime, {n for n, _ in q.model.named_modules()})}
    fallbacks = runtime_fallbacks(f)
    if fallbacks:
        f["fallback_layers"] = {**f.get("fallback_layers", {}), **fallbacks}
    return f


def kernel_profile(files: dict[str, Path], task) -> dict[str, dict[str, dict[str, float]]]:
    """Kernel time per run at batch 32 by op type (ONNX Runtime's profiler), on 1 and 2 threads; printed."""
    import onnx

    from modelpress.analyze.profile import profile_onnx

    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, path in files.items():
        proto = onnx.load(str(path))
        for threads in (1, 2):
            ops = profile_onnx(proto, task, {"rows": [], "modules": []}, (32,), runs=150, threads=threads)["batches"]["32"]["ops"]
            out.setdefault(label, {})[str(threads)] = {o["op"]: round(o["us_per_run"], 1) for o in ops}
            top = ", ".join(f"{o['op']} {o['us_per_run']:.0f}" for o in ops[:4])
            print(f"{task.name} {label}, {threads} thread(s), batch 32, kernel µs per run: "
                  f"{sum(o['us_per_run'] for o in ops):.0f} ({top})")
    return out


def calibration_slices(name: str, slices: int, folder: Path) -> list[dict]:
    """Our static int8 against ORT's quantize_static, each calibrated on the same disjoint 512-sample slice
    of the training inputs, ``slices`` times: does the score difference keep its sign?"""
    from modelpress.task import Batches

    base = load_task(name)
    model, arrays, rows = base.build_model(), base.train_data.arrays, []
    available = len(next(iter(arrays.values()))) // 512
    if slices > available:
        print(f"{name}: its training inputs hold {available} disjoint 512-sample slices; "
              f"using {available}, not {slices}")
        slices = available
    for i in range(slices):
        task = dataclasses.replace(base, calib_data=Batches({k: v[512 * i: 512 * (i + 1)] for k, v in arrays.items()},
                                                            batch_size=64))
        sub = folder / f"slice{i}"
        fp32, _ = onnx_session(model, task, sub / "fp32")
        fp32_top = outputs(fp32, task)[0].argmax(-1)
        theirs_logits, y = outputs(open_session(ort_quantized("static", sub / "fp32" / "model.onnx", task,
                                                              sub / "ort")), task)
        recipe = parse_recipe({"task": name, "steps": [{"quantize": {"mode": "static"}}]})
        art = export_model(quantize.apply(copy.deepcopy(model), recipe.steps[0].config, task), task, recipe, sub / "q")
        ours_logits, _ = outputs(open_session(art), task)
        ours, theirs = top1_credit(ours_logits, y), top1_credit(theirs_logits, y)
        rows.append({"model": name, "slice": i, "ours": round(float(ours.mean()), 5),
                     "ort": round(float(theirs.mean()), 5),
                     "difference_samples": round(float(ours.sum() - theirs.sum()), 2), **sign_test(ours, theirs),
                     "flips_ours": int((ours_logits.argmax(-1) != fp32_top).sum()),  # top-1 changed from fp32
                     "flips_ort": int((theirs_logits.argmax(-1) != fp32_top).sum())})
        print(rows[-1], flush=True)
    near_ties(name, model, base)
    diff = np.array([r["difference_samples"] for r in rows])
    se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    print(f"{name}: ours minus ORT over {len(diff)} slices: {diff.mean():+.2f} samples (standard error {se:.2f}); "
          f"ours at least ORT's on {int((diff >= 0).sum())} of {len(diff)}")
    return rows


def near_ties(name: str, model, task, closest: int = 200, draws: int = 100) -> None:
    """Why every int8 variant can score above fp32: on the fp32 model's ``closest`` samples (smallest gap
    between its two highest logits), how often its top-1 and its runner-up are right; and the mean
    accuracy after adding Gaussian noise to the fp32 logits (the predictions it flips, and what that does)."""
    logits = np.concatenate([np.asarray(torch_predict(model, task)(x)[0]) for x, _ in task.test_data])
    y = np.concatenate([t for _, t in task.test_data])
    order = np.argsort(logits, axis=1)
    gap = np.take_along_axis(logits, order[:, -1:], 1)[:, 0] - np.take_along_axis(logits, order[:, -2:-1], 1)[:, 0]
    near = np.argsort(gap)[:closest]
    print(f"{name}: on fp32's {closest} closest calls (top-2 logit gap < {gap[near].max():.3f}) its top-1 is right on "
          f"{(order[near, -1] == y[near]).mean():.1%}, its runner-up on {(order[near, -2] == y[near]).mean():.1%}")
    rng = np.random.default_rng(0)
    for sd in (0.03, 0.1, 0.3):
        noisy = [logits + rng.normal(0, sd, logits.shape) for _ in range(draws)]
        flips = np.mean([(n.argmax(1) != logits.argmax(1)).sum() for n in noisy])
        gain = np.mean([(n.argmax(1) == y).sum() for n in noisy]) - (logits.argmax(1) == y).sum()
        print(f"  logit noise sd {sd}: {flips:.0f} predictions flipped, {gain:+.1f} samples right "
              f"(mean of {draws} draws)")


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    ort_args(p)
    p.add_argument("--profile", action="store_true",
                   help="also profile fp32 and static int8 at batch 32 on 1 and 2 threads (kernel time per op type)")
    p.add_argument("--calib-slices", type=int, default=0, metavar="K",
                   help="instead: our static int8 against ORT's quantize_static on K disjoint calibration slices")
    args = p.parse_args()
    config, runtime = bench_config(args), ort_config(args)
    rows = []
    if args.calib_slices:
        with tempdir() as tmp:
            rows = [r for name in args.tasks.split(",") for r in calibration_slices(name, args.calib_slices, Path(tmp))]
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    for name in args.tasks.split(","):
        task = load_task(name)
        model = task.build_model()
        with tempdir() as tmp:
            tmp = Path(tmp)
            fp32, fp32_size = onnx_session(model, task, tmp / "fp32", runtime)
            fp32_score = score_session(fp32, task)
            rows.append(row(name, "fp32", fp32_score, fp32_score, fp32_size, fp32_size, None, cosine=1.0))
            if runtime.streams > 1:  # the baseline on one stream: a ratio > 1 says streams made fp32 faster too
                one = open_session(load_artifact(tmp / "fp32"), dataclasses.replace(runtime, streams=1))
                rows.append(measure(name, "fp32, 1 stream", one, fp32_size, fp32, fp32_size, fp32_score, task, config))
            sessions, paths = {}, {}
            for candidate, settings in MODES.items():
                t0 = time.perf_counter()
                recipe = parse_recipe({"task": name, "steps": [{"quantize": settings}]})
                q = quantize.apply(copy.deepcopy(model), recipe.steps[0].config, task)
                art = export_model(q, task, recipe, tmp / candidate.replace(" ", "_"))
                apply_s = time.perf_counter() - t0
                session = open_session(art, runtime)
                sessions[candidate], paths[candidate] = session, art.runnable_path()
                f = reported_facts(q, art, runtime)
                r = measure(name, candidate, session, art.size_bytes, fp32, fp32_size, fp32_score, task, config,
                            quantize_s=round(apply_s, 1), int8_ops=f.get("int8_ops"), float_ops=f.get("float_ops"),
                            fallback_layers=f.get("fallback_layers"), layer_bits=f.get("layer_bits"),
                            quant_boundaries=f.get("quant_boundaries"))
                # what quantize.explain reads of a Result: the facts, the ratios and their verdicts, the setting
                r["why_slower"] = quantize.explain(SimpleNamespace(
                    facts=f, latency_ratio=r["latency_ratio"], latency_verdict=r["latency_verdict"],
                    threads=runtime.threads, streams=runtime.streams))
                rows.append(r)
            for kind in ("static", "dynamic"):
                art = ort_quantized(kind, tmp / "fp32" / "model.onnx", task, tmp / f"ort_{kind}")
                session = open_session(art, runtime)
                sessions[f"ort {kind}"] = session
                rows.append(measure(name, f"ORT quantize_{kind} (defaults)", session, art.size_bytes, fp32, fp32_size,
                                    fp32_score, task, config))
            for candidate in AGAINST_ORT:
                ours = next(r for r in rows if r["model"] == name and r["candidate"] == candidate)
                ours["vs_ort_static"] = latency_ratios(sessions[candidate], sessions["ort static"], task, config)
                ours["vs_ort_static_samples"] = sign_test(correct(sessions[candidate], task),
                                                          correct(sessions["ort static"], task))
                for bs, ratio in ours["vs_ort_static"].items():
                    ours[f"vs_ort@{bs}"] = ratio
            if args.profile:
                ours = next(r for r in rows if r["model"] == name and r["candidate"] == "static")
                ours["kernel_us@32"] = kernel_profile({"fp32": tmp / "fp32" / "model.onnx",
                                                       "static": paths["static"]}, task)
    emit(rows, args, f"quantize: each mode against fp32 on ONNX Runtime, {ort_title(args)} (latency ratio < 1 = faster)",
         ("cosine", "ties", "vs_ort@1", "vs_ort@32", "quantize_s"))


if __name__ == "__main__":
    main()
