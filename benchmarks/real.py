"""The real-model matrix (issue #17): each reference model (MobileNetV2, EfficientNet-Lite2, all-MiniLM-L6-v2)
exported in fp32 to every runtime, and each technique with its defaults on ONNX Runtime, plus OpenVINO's int8.

    python benchmarks/real.py --json /tmp/real.json --markdown /tmp/real.md
    python benchmarks/real.py --models mobilenet-v2 --cells "fp32,quantize static" --quick

Each cell is one recipe run by ``modelpress.run`` (benchmarks/real_cells.py) in its own process with a time
limit, so a crash, a hang or a dying process is recorded and the matrix goes on. Per cell: fidelity to the
fp32 model (top-1 agreement and top-5 overlap for the classifiers, cosine and nearest-neighbour agreement for
MiniLM's embeddings), latency ratio to fp32 ONNX Runtime at batch 1 and 8 (16 for MiniLM) with its
interquartile range, size ratio to the fp32 ONNX file, whether modelpress flagged the result, wall time; or the
refusal (a ModelpressError: its message) or the crash (exception type, first line, where it was raised).
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
from typing import Any

from common import QUICK, machine, ort_args, ort_title, parser
from real_cells import big_batch, cells

from modelpress.bench import BenchConfig

MODELS = ("mobilenet-v2", "efficientnet-lite2", "minilm")
FULL = BenchConfig(batch_sizes=(1, 8), warmup=3, rounds=10, runs_per_round=5)
CELL_SCRIPT = Path(__file__).resolve().with_name("real_cells.py")


def specs(args: Any) -> list[dict[str, Any]]:
    """The cells asked for, each with its runtime settings and benchmark configuration."""
    bench = QUICK if args.quick else FULL
    wanted = [c.strip() for c in args.cells.split(",")] if args.cells else []
    out = []
    for model in args.models.split(","):
        for spec in cells(model):
            if wanted and not any(w in spec["cell"] for w in wanted):
                continue
            ort = {"threads": args.threads, "streams": args.streams, "spinning": args.spinning}
            spec["ort"] = {"backend": "onnxruntime", **ort}
            spec["runtime"].update(ort if spec["runtime"]["backend"] == "onnxruntime" else {"threads": args.threads})
            spec["timing"] = "quick" if args.quick else "full"
            spec["bench"] = {"batch_sizes": [1, big_batch(model)], "warmup": bench.warmup, "rounds": bench.rounds,
                             "runs_per_round": bench.runs_per_round}
            out.append(spec)
    return out


def run_isolated(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run one cell in a child process (its own process group, killed whole on timeout)."""
    base = {k: spec[k] for k in ("model", "cell", "technique", "timing")}
    base.update(export=spec["export"]["format"], runtime=spec["runtime"]["backend"])
    with tempfile.TemporaryDirectory(prefix="modelpress-real-cell-") as tmp:
        spec_path, row_path, log_path = Path(tmp, "spec.json"), Path(tmp, "row.json"), Path(tmp, "log.txt")
        spec_path.write_text(json.dumps(spec))
        start = time.perf_counter()
        with open(log_path, "w") as log:
            child = subprocess.Popen([sys.executable, str(CELL_SCRIPT), str(spec_path), str(row_path)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return {**base, "status": "timeout", "error": f"no result within the cell limit of {timeout_s:.0f} s",
                        "wall_s": round(time.perf_counter() - start, 1)}
        if row_path.exists():
            return json.loads(row_path.read_text())
        tail = log_path.read_text(errors="replace")[-3000:]
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return {**base, "status": "crash", "error_type": "process died", "error": f"the cell's process ended ({how}) "
                f"without a result", "log_tail": tail, "wall_s": round(time.perf_counter() - start, 1)}


def fidelity_text(f: dict[str, float] | None) -> str:
    if not f:
        return "–"
    if "agreement" in f:
        return f"top-1 {f['agreement']:.3f}, top-5 {f['top5_overlap']:.3f}"
    return f"cos {f['cosine']:.4f}, NN {f['nn_agreement']:.3f}" if "nn_agreement" in f else f"cos {f['cosine']:.4f}"


def latency_text(row: dict[str, Any], batch: str) -> str:
    ratio, iqr = (row.get("latency_ratio") or {}).get(batch), (row.get("latency_iqr") or {}).get(batch)
    if ratio is None:
        return "–"
    return f"{ratio:.2f} ({iqr[0]:.2f}–{iqr[1]:.2f})" if iqr else f"{ratio:.2f}"


def recheck_text(row: dict[str, Any]) -> str:
    """The separate re-timing of the smallest and largest batch, and '(off)' when it differs by more than 15%."""
    again = row.get("latency_recheck")
    if not again:
        return "–"
    text = " / ".join(f"{again[b]:.2f}" for b in sorted(again, key=int))
    return text if row.get("recheck_ok") else f"{text} **(off)**"


def outcome(row: dict[str, Any]) -> str:
    """What modelpress said: its collapse flag and notes for a result, the reason for a refusal, the crash."""
    if row["status"] == "ok":
        flags = ["**fidelity collapsed**"] if row.get("flagged") else []
        skipped = {k: v for k, v in (row.get("facts") or {}).items() if k.endswith("skipped") and v}
        flags += [f"{k}: {len(v)}" for k, v in skipped.items()]
        return "; ".join(flags) or "–"
    if row["status"] == "crash":
        where = row.get("where") or row.get("raised_at") or ""
        return f"**CRASH** {row.get('error_type')}: {row.get('error')}" + (f" ({where})" if where else "")
    if row["status"] == "timeout":
        return f"**TIMEOUT**: {row['error']}"
    return f"refused ({row.get('error_type')}): {row['error']}"


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The matrix as BENCHMARKS.md prints it: one table, one row per cell."""
    head = ["model", "cell", "status", "fidelity to fp32", "latency × @1", "latency × @8 (MiniLM @16)", "size ×",
            "re-timed @1 / @8 (16)", "wall s", "flagged / reason"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        big = str(big_batch(r["model"]))
        cells_ = [r["model"], r["cell"], r["status"], fidelity_text(r.get("fidelity")), latency_text(r, "1"),
                  latency_text(r, big), f"{r['size_ratio']:.3f}" if r.get("size_ratio") is not None else "–",
                  recheck_text(r), f"{r.get('wall_s', 0):.0f}", outcome(r)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells_) + " |")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "crash", "timeout")}
    per_model = {m: sum(r.get("wall_s", 0) for r in rows if r["model"] == m) for m in dict.fromkeys(r["model"] for r in rows)}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} cells. Wall time of the cells: "
              + ", ".join(f"{m} {t / 60:.0f} min" for m, t in per_model.items()) + "."]
    return "\n".join(lines) + "\n"


def title(args: Any, rows: list[dict[str, Any]]) -> str:
    quick = any(r.get("timing") == "quick" for r in rows)
    return (f"Real models: latency × = candidate / fp32 ONNX Runtime ({ort_title(args)}), median of paired "
            f"interleaved rounds (interquartile range); size × = candidate file / fp32 ONNX file; fidelity on the "
            f"test split against the fp32 torch model{' (--quick timing)' if quick else ''} — {machine()}")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__.splitlines()[0])
    ort_args(p)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated tasks (default {','.join(MODELS)})")
    p.add_argument("--cells", default="", help="comma-separated substrings of cell names to run, e.g. "
                   "'fp32,quantize static' (default: every cell)")
    p.add_argument("--cell-timeout", type=float, default=900, help="seconds a cell may take (default 900)")
    p.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                   help="run nothing: print (and --markdown) the table of rows saved by earlier --json runs, in order")
    args = p.parse_args(argv)
    todo = [] if args.render else specs(args)
    rows = [r for path in args.render or () for r in json.loads(path.read_text())]
    started = time.perf_counter()
    for i, spec in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {spec['model']} / {spec['cell']} ...", flush=True)
        row = run_isolated(spec, args.cell_timeout)
        rows.append(row)
        print(f"    {row['status']} in {row.get('wall_s', 0):.0f} s: {fidelity_text(row.get('fidelity'))}; "
              f"latency {latency_text(row, '1')} @1, {latency_text(row, str(big_batch(row['model'])))} "
              f"@{big_batch(row['model'])}; {outcome(row)}", flush=True)
        if args.json:  # written after each cell, so a long matrix that is stopped keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2, default=str))
    table = markdown(rows, title(args, rows))
    print("\n" + table + (f"\nmatrix wall time: {time.perf_counter() - started:.0f} s" if todo else ""))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
        print(f"wrote {args.markdown}")
    if args.json and todo:
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
