"""What every benchmark script shares: the row format, interleaved latency ratios, the table and --json.

Row fields (the convention): ``model``, ``candidate``, ``score``, ``score_drop`` (fp32 score minus
candidate score, metric units), ``size_ratio`` (candidate bytes / fp32 bytes), ``latency_ratio``
(batch size -> candidate / fp32 median latency, timed interleaved in one process), plus each
script's own fields.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelpress.bench import BenchConfig, compare  # noqa: E402
from modelpress.doctor import cpu_info  # noqa: E402
from modelpress.evaluate import evaluate, predict_fn  # noqa: E402
from modelpress.runtime import RuntimeConfig, open_session, setting_label  # noqa: E402

# min_seconds: each comparison spans 3 s, longer than the fast/slow latency levels last (see modelpress.bench)
BENCH = BenchConfig(batch_sizes=(1, 32), warmup=10, rounds=30, runs_per_round=10, min_seconds=3.0)
QUICK = BenchConfig(batch_sizes=(1, 32), warmup=2, rounds=4, runs_per_round=3)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="write the rows as a JSON list to this path")
    p.add_argument("--quick", action="store_true", help="few timing rounds (smoke test, not for BENCHMARKS.md)")
    p.add_argument("--markdown", type=Path, help="also write the table as Markdown, as BENCHMARKS.md prints it "
                   "(drop in points, ratios to 3 decimals)")
    return p


def bench_config(args: argparse.Namespace) -> BenchConfig:
    return QUICK if args.quick else BENCH


def ort_args(p: argparse.ArgumentParser) -> None:
    """--threads, --streams and --spinning: the ONNX Runtime settings every session of the run uses."""
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    p.add_argument("--streams", type=int, default=1,
                   help="split each batch across this many sessions run at once, threads / streams each (default 1)")
    p.add_argument("--spinning", action="store_true",
                   help="ONNX Runtime's idle threads spin (its own default; modelpress turns it off by default)")


def ort_config(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig(threads=args.threads, streams=args.streams, spinning=args.spinning)


def ort_title(args: argparse.Namespace) -> str:
    """'2 threads, 2 streams, spinning': the run's ONNX Runtime settings for a table title."""
    return setting_label(args.threads, args.streams, args.spinning)


def onnx_session(model: Any, task: Any, folder: Path, runtime: RuntimeConfig = RuntimeConfig()):
    """Export ``model`` (a plain model or a technique's ``Applied``, whose ONNX rewrites are applied) to ONNX
    under ``folder`` and open it on ONNX Runtime; returns (session, size_bytes)."""
    from modelpress.compress import Applied
    from modelpress.export import onnx as onnx_export

    applied = Applied.of(model)
    art = onnx_export.export(applied.model, task, folder, rewrites=applied.onnx_rewrites)
    return open_session(art, runtime), art.size_bytes


RECHECK_TOLERANCE = 0.15  # a reported ratio and its separate re-timing may differ by this share at most


class Ratios(dict):
    """Batch size -> latency ratio, as reported; ``recheck`` holds a second, separate interleaved timing of the
    same two sessions at the smallest and largest batch size (the check an outside harness would make)."""

    recheck: dict[str, float]

    def agrees(self) -> bool:
        return all(abs(self.recheck[b] / self[b] - 1) <= RECHECK_TOLERANCE for b in self.recheck)


def latency(candidate: Any, baseline: Any, task: Any, config: BenchConfig) -> tuple[Ratios, dict[str, str]]:
    """Per batch size: the median per-round ratio candidate/baseline (timed interleaved), and its verdict
    (faster / slower / no measurable difference, from the interquartile range of the per-round ratios).
    The smallest and largest batch sizes are then timed again, separately (``Ratios.recheck``)."""
    from modelpress.result import verdict

    res = compare(candidate.run, baseline.run, task.example_inputs, config)
    return rechecked(res, candidate.run, baseline.run, task, config), \
        {str(bs): verdict(*r["paired_iqr"]) for bs, r in res.items()}


def rechecked(res: dict[int, dict], candidate: Any, baseline: Any, task: Any, config: BenchConfig) -> Ratios:
    """The paired ratios of ``bench.compare``'s result ``res``, with the smallest and largest batch sizes of
    ``config`` timed again, separately, as their ``recheck`` (``candidate`` and ``baseline``: run functions)."""
    from dataclasses import replace

    ratios = Ratios({str(bs): round(r["paired_ratio"], 4) for bs, r in res.items()})
    ends = sorted({min(config.batch_sizes), max(config.batch_sizes)})
    again = compare(candidate, baseline, task.example_inputs, replace(config, batch_sizes=tuple(ends)))
    ratios.recheck = {str(bs): round(r["paired_ratio"], 4) for bs, r in again.items()}
    return ratios


def latency_ratios(candidate: Any, baseline: Any, task: Any, config: BenchConfig) -> Ratios:
    """Median per-round ratio candidate/baseline at each batch size, timed interleaved (and re-timed)."""
    return latency(candidate, baseline, task, config)[0]


def recheck_artifact(reported: dict[str, float], artifact: Path, model: Any, task: Any, recipe: Any,
                     folder: Path, baseline_recipe: Any = None) -> dict[str, Any]:
    """A pipeline result's latency ratios timed again from outside: the artifact folder ``artifact`` against a
    fresh fp32 export of ``model`` (the recipe's exporter, into ``folder``) on the recipe's runtime, interleaved,
    at the smallest and largest of the ``reported`` batch sizes. ``baseline_recipe``: the recipe whose exporter
    and runtime the fp32 model uses instead (a search's ratio "to fp32 as deployed": fp32 on the search's
    runtime, the artifact on its own). Returns ``latency_recheck`` and whether it agrees with ``reported`` within
    ``RECHECK_TOLERANCE`` (``recheck_ok``)."""
    from dataclasses import replace

    from modelpress.artifact import load
    from modelpress.pipeline import export_model

    sizes = sorted(int(b) for b in reported)
    if not sizes:
        return {"latency_recheck": {}, "recheck_ok": None}
    ends = tuple(sorted({sizes[0], sizes[-1]}))
    candidate = open_session(load(artifact), recipe.runtime)
    base = baseline_recipe or recipe
    baseline = open_session(export_model(model, task, base, folder, fp32=True), base.runtime)
    again = compare(candidate.run, baseline.run, task.example_inputs, replace(recipe.bench, batch_sizes=ends))
    recheck = {str(b): round(r["paired_ratio"], 4) for b, r in again.items()}
    return {"latency_recheck": recheck,
            "recheck_ok": all(abs(recheck[b] / reported[b] - 1) <= RECHECK_TOLERANCE for b in recheck)}


def row(model: str, candidate: str, score: float, fp32_score: float, size_bytes: int, fp32_size_bytes: int,
        latency_ratio: dict[str, float] | None, /, **extra: Any) -> dict[str, Any]:
    """One benchmark row; the fixed fields are positional-only, so any name may be an extra column. Ratios from
    :func:`latency` bring their separate re-timing (``latency_recheck``) and whether it agrees within
    ``RECHECK_TOLERANCE`` (``recheck_ok``)."""
    out = {"model": model, "candidate": candidate, "score": round(score, 4), "score_drop": round(fp32_score - score, 4),
           "size_ratio": round(size_bytes / fp32_size_bytes, 4), "latency_ratio": latency_ratio, **extra}
    if isinstance(latency_ratio, Ratios):
        out.update(latency_recheck=latency_ratio.recheck, recheck_ok=latency_ratio.agrees())
    return out


def score_session(session: Any, task: Any) -> float:
    """The task's metric on its test data (the reported score)."""
    return evaluate(predict_fn(session), task, task.test_data)


def machine() -> str:
    cpu = cpu_info()
    flags = ", ".join(k for k, v in cpu["flags"].items() if v)
    return f"{cpu['model']}, {cpu['cores']} cores ({flags})"


def emit(rows: list[dict[str, Any]], args: argparse.Namespace, title: str, extra_columns: tuple[str, ...] = ()) -> None:
    """Print the rows as a table and write them as JSON when asked."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title} — {machine()}")
    batch_sizes = sorted({b for r in rows for b in (r.get("latency_ratio") or {})}, key=int)
    for col in ("model", "candidate", "score", "score_drop", "size_ratio", *[f"lat×@{b}" for b in batch_sizes],
                *extra_columns):
        table.add_column(col, justify="left" if col in ("model", "candidate") else "right")
    for r in rows:
        lat = r.get("latency_ratio") or {}
        table.add_row(r["model"], r["candidate"], _fixed(r["score"], ".4f"), _fixed(r["score_drop"], "+.4f"),
                      _fixed(r["size_ratio"], ".3f"),
                      *[f"{lat[b]:.3f}" if b in lat else "-" for b in batch_sizes],
                      *[_fmt(r.get(c)) for c in extra_columns])
    Console(width=200).print(table)
    checked = [r for r in rows if "recheck_ok" in r]
    if checked:
        off = [r for r in checked if not r["recheck_ok"]]
        print(f"re-timing: {len(checked) - len(off)} of {len(checked)} rows' ratios at the smallest and largest batch "
              f"agree within ±{RECHECK_TOLERANCE:.0%} with a separate interleaved timing of the same sessions"
              + "".join(f"\n  differs: {r['model']} / {r['candidate']}: reported {r['latency_ratio']}, "
                        f"re-timed {r['latency_recheck']}" for r in off))
    if getattr(args, "markdown", None):
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, batch_sizes, extra_columns))
        print(f"wrote {args.markdown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=str))
        print(f"wrote {args.json}")


def markdown(rows: list[dict[str, Any]], batch_sizes: list[str], extra_columns: tuple[str, ...] = ()) -> str:
    """The rows as BENCHMARKS.md tables them: drop in points of accuracy, size and latency ratios to 3 decimals."""
    has_recheck = any("latency_recheck" in r for r in rows)
    head = ["model", "candidate", "score", "drop (pts)", "size ×", *[f"latency × @{b}" for b in batch_sizes], *extra_columns,
            *(["re-timed " + " / ".join(f"@{b}" for b in dict.fromkeys((batch_sizes[0], batch_sizes[-1]))), "within ±15%"]
              if has_recheck else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lat = r.get("latency_ratio") or {}
        drop = None if r["score_drop"] is None else 100 * r["score_drop"]
        cells = [r["model"], r["candidate"], _fixed(r["score"], ".4f", "–"), _fixed(drop, "+.2f", "–"),
                 _fixed(r["size_ratio"], ".3f", "–"),
                 *[f"{lat[b]:.3f}" if b in lat else "–" for b in batch_sizes],
                 *["–" if r.get(c) is None else f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c])
                   for c in extra_columns]]
        if has_recheck:
            again = r.get("latency_recheck") or {}
            cells += [" / ".join(f"{again[b]:.3f}" for b in sorted(again, key=int)) or "–",
                      {True: "yes", False: "**no**"}.get(r.get("recheck_ok"), "–")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fixed(value: float | None, fmt: str, missing: str = "-") -> str:
    """A number in a fixed format, or ``missing`` for a value not measured (a row that stopped early has no size)."""
    return missing if value is None else format(value, fmt)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def tempdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="modelpress-bench-")
