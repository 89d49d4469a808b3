"""``modelpress bench TARGET``: latency of a task's model or an artifact folder on a runtime."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .terminal import console, model_args, model_for
from .errors import shown


def register(subparsers: Any) -> None:
    b = subparsers.add_parser("bench", help="latency of a task's model or an artifact folder on a runtime")
    b.add_argument("target", help="a task name or an artifact folder")
    b.add_argument("--compare", help="a second task or artifact, timed interleaved with the first")
    b.add_argument("--runtime", default="onnxruntime")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--streams", type=int, default=1,
                   help="split each batch across this many sessions run at once (ONNX Runtime; threads / streams each)")
    b.add_argument("--batch-sizes", default="1,32")
    b.add_argument("--rounds", type=int, default=15)
    model_args(b)
    b.set_defaults(fn=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile

    from rich.table import Table

    from . import artifact as artifact_mod
    from . import bench, registry
    from .config import parse
    from .errors import ConfigError
    from .runtime import RuntimeConfig, open_session, setting_label

    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ConfigError(f"--batch-sizes must be whole numbers separated by commas (1,32), got "
                          f"'{shown(args.batch_sizes, 60)}'.") from None
    config = parse(bench.BenchConfig, {"batch_sizes": batch_sizes, "rounds": args.rounds}, "bench")
    runtime = parse(RuntimeConfig, {"backend": args.runtime, "threads": args.threads, "streams": args.streams},
                    "runtime")
    con = console()
    with tempfile.TemporaryDirectory() as tmp:
        def artifact_for(target: str, folder: Path):
            if Path(target).is_dir():
                return artifact_mod.load(target)
            args.task = target
            task, model = model_for(args)
            exporter = registry.module("export format", args.format)
            return exporter.export(model, task, folder, parse(exporter.Config, {}, "export"))

        first = artifact_for(args.target, Path(tmp) / "a")
        spec = first.manifest["inputs"]

        def example(bs: int):
            import numpy as np

            rng = np.random.default_rng(0)
            return {n: rng.random([bs, *v["shape"][1:]]).astype(v["dtype"]) for n, v in spec.items()}

        session, peak_bytes = bench.peak_memory(lambda: open_session(first, runtime),
                                                lambda sess: sess.run(example(max(batch_sizes))))

        table = Table(title=f"latency on {args.runtime} ({setting_label(args.threads, args.streams)})")
        for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "throughput/s"):
            table.add_column(col, justify="right")
        if args.compare:
            other = open_session(artifact_for(args.compare, Path(tmp) / "b"), runtime)
            table.add_column("ratio to --compare", justify="right")
            with con.status("timing interleaved"):
                res = bench.compare(session.run, other.run, example, config)
            for bs, r in res.items():
                c = r["candidate"]
                table.add_row(str(bs), f"{c['p50']:.3f}", f"{c['p90']:.3f}", f"{c['p99']:.3f}",
                              f"{bs * 1e3 / c['p50']:.0f}", f"{r['paired_ratio']:.3f}")
        else:
            with con.status("timing"):
                res = bench.single(session.run, example, config)
            for bs, c in res.items():
                table.add_row(str(bs), f"{c['p50']:.3f}", f"{c['p90']:.3f}", f"{c['p99']:.3f}", f"{bs * 1e3 / c['p50']:.0f}")
        con.print(table)
        con.print(f"artifact size: {first.size_bytes} bytes; session peak memory: {peak_bytes / 1e6:.1f} MB")
    return 0
