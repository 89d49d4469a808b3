"""Int8 on the reference models, modelpress against the tools users compare it with, side by side in one run.

    python benchmarks/quantize_real.py --json rows.json --markdown quantize_real.md
    python benchmarks/quantize_real.py --models mobilenet-v2 --only "modelpress static,ORT quantize_static" --quick

Per model (MobileNetV2, EfficientNet-Lite2, all-MiniLM-L6-v2), on the same fp32 ONNX export and the same
calibration inputs (the task's ``calib_data``):
- modelpress: ``quantize`` static, dynamic and mixed (defaults) on ONNX Runtime; the OpenVINO exporter's
  ``int8: true`` (NNCF, model type auto; for MiniLM also with its feed-forward output layers in float,
  ``keep_float``, computed in f32 or with the bf16 hint) and ``int8: weights``; for MiniLM, weight-only int4
  (groups of 32) computed from its packed weights on ONNX Runtime (``MatMulNBits``) and OpenVINO;
- ONNX Runtime's own quantizer: ``quantize_static`` (QDQ, its defaults; and ``per_channel=True``) and
  ``quantize_dynamic`` (defaults; and ``per_channel=True``);
- NNCF on the fp32 IR, called directly: ``nncf.quantize`` (``model_type=TRANSFORMER`` for MiniLM, its default
  otherwise) and ``nncf.compress_weights`` (its default, int8 asymmetric weights);
- OpenVINO's fp32 IR with the bf16 inference hint (where this CPU computes in bf16) and with f32.

Columns: fidelity to the fp32 torch model on the test split (top-1 agreement, top-5 overlap and ``decisive``, the
top-1 agreement on the views fp32 decides, for the CNNs; cosine and nearest-neighbour agreement for MiniLM;
``evaluate.compare``), latency ratio to the fp32 ONNX model on ONNX Runtime at batch 1 and 8 (16 for MiniLM;
paired, interleaved, then re-timed separately), size ratio to the fp32 ONNX file, and ``memory_mb_at1`` /
``memory_mb``: the resident memory a fresh process grows by when it loads the session and runs one batch of 1 /
of the larger size (``bench.peak_memory``: resident memory sampled after loading and after the run, as result.json's
``peak_memory_bytes``). Every session uses ``--threads`` threads. Timing: 10 interleaved rounds of 3 runs, each
comparison over at least 3 s (``--quick``: the other scripts' quick setting).
A candidate that cannot be made is a row with its reason, not a crash of the run.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from common import QUICK, emit, latency, onnx_session, ort_args, parser, tempdir
from real_cells import big_batch

from modelpress.bench import BenchConfig

MODELS = ("mobilenet-v2", "efficientnet-lite2", "minilm")
TRANSFORMERS = ("minilm",)
FFN_OUTPUT = "model.encoder.layer.?.output.dense"  # MiniLM's feed-forward output layers (keep_float)
# weight-only int4 computed from the packed weights (MatMulNBits; OpenVINO's int4 weights): issue 18's memory target
INT4_PACKED = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed"}
# 13 candidates per model (17 for MiniLM): fewer rounds than the other scripts' BENCH, each comparison still
# over 3 s
TIMING = BenchConfig(batch_sizes=(1, 8), warmup=3, rounds=10, runs_per_round=3, min_seconds=3.0)


# ---- sessions on files the peers write ------------------------------------------------------------------

class RawSession:
    """An ONNX Runtime or OpenVINO session on a model file, with the settings modelpress's sessions use."""

    def __init__(self, kind: str, path: Path, threads: int, precision: str = "f32"):
        self.kind, self.path, self.precision = kind, Path(path), precision
        if kind == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self._names = [o.name for o in self._s.get_outputs()]
        else:
            import openvino as ov

            props = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
            if precision == "f32":
                props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = 0
            self._c = ov.Core().compile_model(str(path), "CPU", props)
            self._r = self._c.create_infer_request()

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.kind == "onnxruntime":
            return self._s.run(self._names, inputs)
        res = self._r.infer(inputs)
        return [np.asarray(res[o]) for o in self._c.outputs]


def file_size(path: Path) -> int:
    path = Path(path)
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


# ---- the peers ----------------------------------------------------------------------------------------------

def calibration(task: Any) -> list[dict[str, np.ndarray]]:
    return [dict(batch) for batch in task.calib_data]


def ort_static(fp32: Path, out: Path, calib: list[dict], per_channel: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> dict | None:
            return next(self._it, None)

    quantize_static(str(fp32), str(out), Reader(), per_channel=per_channel)
    return out


def ort_dynamic(fp32: Path, out: Path, per_channel: bool) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(str(fp32), str(out), per_channel=per_channel)
    return out


def fp32_ir(fp32: Path, out: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(fp32)), str(out), compress_to_fp16=False)
    return out


def nncf_quantize(ir: Path, out: Path, calib: list[dict], transformer: bool) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(ir))
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
    q = nncf.quantize(model, nncf.Dataset(calib), subset_size=sum(len(next(iter(b.values()))) for b in calib), **kwargs)
    ov.save_model(q, str(out), compress_to_fp16=False)
    return out


def nncf_weights(ir: Path, out: Path) -> Path:
    import nncf
    import openvino as ov

    ov.save_model(nncf.compress_weights(ov.Core().read_model(str(ir))), str(out), compress_to_fp16=False)
    return out


# ---- modelpress's candidates ----------------------------------------------------------------------------------

def modelpress_artifact(name: str, steps: list, export: dict, runtime: dict, out: Path) -> tuple[Any, Path]:
    """``modelpress.run`` of one recipe (no timing of its own: this script times every row the same way)."""
    from modelpress.pipeline import run
    from modelpress.recipe import parse_recipe

    recipe = parse_recipe({"task": name, "steps": steps, "export": export, "runtime": runtime,
                           "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 1}})
    run(recipe, out)
    return recipe, out / "artifact"


def candidates(name: str, threads: int) -> list[tuple[str, str, Callable[[Path, Path, list, Path], Any]]]:
    """(label, who, make) per row; ``make(fp32_onnx, fp32_ir, calib, workdir)`` returns the session, its file or
    artifact folder, and the spec ``memory_of`` opens it from in a fresh process."""
    from modelpress.artifact import load
    from modelpress.runtime import open_session

    ort_rt = {"backend": "onnxruntime", "threads": threads}
    ov_rt = {"backend": "openvino", "threads": threads, "precision": "int8"}
    transformer = name in TRANSFORMERS

    def mp(steps: list, export: dict, runtime: dict) -> Callable:
        def make(fp32: Path, ir: Path, calib: list, work: Path) -> Any:
            recipe, art = modelpress_artifact(name, steps, export, runtime, work / "run")
            return open_session(load(art), recipe.runtime), art, {"artifact": str(art), "runtime": runtime}

        return make

    def raw(kind: str, build: Callable[[Path, Path, list, Path], Path], precision: str = "f32") -> Callable:
        def make(fp32: Path, ir: Path, calib: list, work: Path) -> Any:
            path = build(fp32, ir, calib, work)
            return RawSession(kind, path, threads, precision), path, \
                {"artifact": None, "kind": kind, "path": str(path), "threads": threads, "precision": precision}

        return make

    onnx = {"format": "onnx"}
    return [
        ("modelpress quantize static", "modelpress", mp([{"quantize": {"mode": "static"}}], onnx, ort_rt)),
        ("modelpress quantize dynamic", "modelpress", mp([{"quantize": {"mode": "dynamic"}}], onnx, ort_rt)),
        ("modelpress quantize mixed", "modelpress", mp([{"quantize": {"mode": "mixed"}}], onnx, ort_rt)),
        ("modelpress OpenVINO int8: true", "modelpress", mp([], {"format": "openvino", "options": {"int8": True}}, ov_rt)),
        *([("modelpress OpenVINO int8: true, keep_float FFN output", "modelpress",
            mp([], {"format": "openvino", "options": {"int8": True, "keep_float": [FFN_OUTPUT]}}, ov_rt)),
           ("modelpress OpenVINO int8: true, keep_float FFN output, bf16 hint", "modelpress",
            mp([], {"format": "openvino", "options": {"int8": True, "keep_float": [FFN_OUTPUT]}},
               {**ov_rt, "precision": "bf16"}))]
          if transformer else []),
        ("modelpress OpenVINO int8: weights", "modelpress",
         mp([], {"format": "openvino", "options": {"int8": "weights"}}, ov_rt)),
        *([("modelpress int4 weight_only g32 packed", "modelpress", mp([{"quantize": INT4_PACKED}], onnx, ort_rt)),
           ("modelpress int4 weight_only g32 packed_int8", "modelpress",
            mp([{"quantize": {**INT4_PACKED, "compute": "packed_int8"}}], onnx, ort_rt)),
           ("modelpress int4 weight_only g32 packed, OpenVINO", "modelpress",
            mp([{"quantize": INT4_PACKED}], {"format": "openvino"}, {**ov_rt, "precision": "fp32"}))]
          if transformer else []),
        ("ORT quantize_static (defaults)", "peer", raw("onnxruntime", lambda f, i, c, w: ort_static(f, w / "s.onnx", c, False))),
        ("ORT quantize_static per_channel", "peer", raw("onnxruntime", lambda f, i, c, w: ort_static(f, w / "s.onnx", c, True))),
        ("ORT quantize_dynamic (defaults)", "peer", raw("onnxruntime", lambda f, i, c, w: ort_dynamic(f, w / "d.onnx", False))),
        ("ORT quantize_dynamic per_channel", "peer", raw("onnxruntime", lambda f, i, c, w: ort_dynamic(f, w / "d.onnx", True))),
        (f"NNCF quantize{' (TRANSFORMER)' if transformer else ''}", "peer",
         raw("openvino", lambda f, i, c, w: nncf_quantize(i, w / "q.xml", c, transformer))),
        ("NNCF compress_weights (int8)", "peer", raw("openvino", lambda f, i, c, w: nncf_weights(i, w / "w.xml"))),
        ("OpenVINO fp32 IR, bf16 hint", "peer", raw("openvino", lambda f, i, c, w: i, "bf16")),
        ("OpenVINO fp32 IR, f32 hint", "peer", raw("openvino", lambda f, i, c, w: i, "f32")),
    ]


# ---- memory in a fresh process ---------------------------------------------------------------------------------

def memory_child(spec_path: str) -> None:
    """``--memory-child SPEC``: load one session, run one batch, print the resident-memory growth in bytes."""
    spec = json.loads(Path(spec_path).read_text())
    inputs = dict(np.load(spec["inputs"]))
    warm_imports(spec.get("kind") or spec["runtime"]["backend"])
    from modelpress.artifact import load
    from modelpress.bench import peak_memory
    from modelpress.runtime import RuntimeConfig, open_session

    def opened() -> Any:
        if spec["artifact"]:
            return open_session(load(spec["artifact"], verify=False), RuntimeConfig(**spec["runtime"]))
        return RawSession(spec["kind"], Path(spec["path"]), spec["threads"], spec["precision"])

    _, grown = peak_memory(opened, lambda session: session.run(inputs))
    print(json.dumps({"bytes": grown}))


def warm_imports(kind: str) -> None:
    """Import what a session needs before measuring (the child measures the session, not the libraries)."""
    import onnx  # noqa: F401  (modelpress's session checks the graph with onnx.checker first)
    import onnxruntime  # noqa: F401

    import modelpress.runtime  # noqa: F401

    if kind == "openvino":
        import openvino  # noqa: F401


def memory_of(spec: dict[str, Any], example: dict[str, np.ndarray], work: Path) -> int | None:
    """Resident-memory growth (bytes) of a fresh process that loads the session of ``spec`` (an artifact and
    its runtime settings, or a peer's model file) and runs ``example`` once; None if the child failed."""
    inputs = work / "mem-inputs.npz"
    np.savez(inputs, **example)
    spec_path = work / "mem-spec.json"
    spec_path.write_text(json.dumps({**spec, "inputs": str(inputs)}))
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(spec_path)], capture_output=True, text=True,
                          timeout=600)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])["bytes"] if done.returncode == 0 and lines else None


def memory_columns(spec: dict[str, Any], task: Any, big: int, work: Path) -> dict[str, float | None]:
    """``memory_mb_at1`` and ``memory_mb`` (at batch ``big``) of ``spec``'s session, in MB (None if not measured)."""
    def mb(batch: int) -> float | None:
        grown = memory_of(spec, task.example_inputs(batch), work)
        return None if grown is None else round(grown / 2**20, 1)

    return {"memory_mb_at1": mb(1), "memory_mb": mb(big)}


# ---- the run ------------------------------------------------------------------------------------------------

def measure_model(name: str, args: Any, config: BenchConfig, done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of one model (``done``: the rows of the models before it, kept in the JSON written per row)."""
    from modelpress.evaluate import compare, predict_fn, torch_predict
    from modelpress.runtime import RuntimeConfig
    from modelpress.task import load_task

    task = load_task(name)
    model = task.build_model()
    calib = calibration(task)
    reference = torch_predict(model, task)
    big = big_batch(name)
    bench = BenchConfig(batch_sizes=(1, big), warmup=config.warmup, rounds=config.rounds,
                        runs_per_round=config.runs_per_round, min_seconds=config.min_seconds)
    wanted = [w.strip() for w in args.only.split(",")] if args.only else []
    unwanted = [w.strip() for w in args.skip.split(",")] if args.skip else []
    rows = []
    with tempdir() as tmp:
        tmp = Path(tmp)
        base, base_size = onnx_session(model, task, tmp / "fp32", RuntimeConfig(threads=args.threads))
        fp32 = next((tmp / "fp32").rglob("*.onnx"))
        ir = fp32_ir(fp32, tmp / "fp32-ir.xml")
        for label, who, make in candidates(name, args.threads):
            if (wanted and not any(w in label for w in wanted)) or any(w in label for w in unwanted):
                continue
            work = tmp / f"c{len(rows)}"
            work.mkdir()
            start = time.perf_counter()
            out: dict[str, Any] = {"model": name, "candidate": label, "who": who, "score": None, "score_drop": None,
                                   "size_ratio": None, "latency_ratio": {}}
            try:
                session, where, spec = make(fp32, ir, calib, work)
                fid = next(iter(compare(reference, predict_fn(session), task.test_data, task.output_kinds,
                                        task.output_names).values()))
                ratios, verdicts = latency(session, base, task, bench)
                size = sum(p.stat().st_size for p in Path(where).rglob("*") if p.is_file()) if Path(where).is_dir() \
                    else file_size(Path(where))
                key = "nn_agreement" if "nn_agreement" in fid else "agreement"
                out.update(score=round(fid[key], 4), score_drop=round(1 - fid[key], 4),
                           size_ratio=round(size / base_size, 4), latency_ratio=ratios, verdict=verdicts,
                           latency_recheck=ratios.recheck, recheck_ok=ratios.agrees(),
                           cosine=round(fid["cosine"], 5), top5_overlap=fid.get("top5_overlap"),
                           decisive=fid.get("decisive_agreement"), **memory_columns(spec, task, big, work))
            except Exception as e:  # noqa: BLE001 - a candidate that cannot be made is a row with its reason
                out["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            out["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(out)
            print(json.dumps(out, default=str), flush=True)
            if args.json:  # written after each row, so a stopped run keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(done + rows, indent=2, default=str))
        # measured as modelpress's candidates are: its session on the fp32 artifact (the peers' raw sessions skip
        # the graph check that modelpress's session makes, so their memory is not comparable to this row)
        spec = {"artifact": str(tmp / "fp32"), "runtime": {"backend": "onnxruntime", "threads": args.threads}}
        rows.append({"model": name, "candidate": "fp32 ONNX Runtime (the reference of every ratio)", "who": "baseline",
                     "score": 1.0, "score_drop": 0.0, "size_ratio": 1.0, "latency_ratio": {},
                     **memory_columns(spec, task, big, tmp)})
    return rows


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2])
        return
    p = parser(__doc__.splitlines()[0])
    ort_args(p)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--only", default="", help="comma-separated substrings of candidate names to run")
    p.add_argument("--skip", default="", help="comma-separated substrings of candidate names not to run")
    args = p.parse_args()
    config = QUICK if args.quick else TIMING
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        rows += measure_model(name, args, config, rows)
    for r in rows:
        if r.get("error"):
            print(f"not made: {r['model']} / {r['candidate']}: {r['error']}")
    emit(rows, args, f"Int8 on the reference models: modelpress and its peers, {args.threads} threads, "
                     "score = top-1 agreement (CNNs) or NN agreement (MiniLM) with fp32",
         extra_columns=("cosine", "top5_overlap", "decisive", "memory_mb_at1", "memory_mb", "error"))


if __name__ == "__main__":
    main()
