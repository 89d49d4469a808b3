"""Deployment bundles: ``modelpress package RUN_FOLDER`` and ``modelpress predict BUNDLE INPUT``.

A bundle is a folder (or a zip of one) holding the artifact's files, ``manifest.json`` (the artifact's
manifest plus the runtime settings of the run), ``preprocessing.json`` (what the inputs must look like),
``predict.py`` (a runner that needs only numpy and the chosen runtime, not modelpress),
``requirements.txt`` and ``README.md``. Encoded artifacts (sparse, clustered, packed) are decoded to the
plain file the runtime opens, so the runner needs no modelpress codec.

>>> import subprocess  # doctest: +SKIP
>>> subprocess.run(["modelpress", "package", "runs/baseline", "-o", "bundle"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError, ModelpressError

REQUIREMENTS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert",
                "executorch": "executorch", "torch": "torch", "torch_cuda": "torch", "tensorrt": "onnxruntime-gpu",
                "onnxruntime_cuda": "onnxruntime-gpu"}


def register(subparsers: Any) -> None:
    """Adds both ``package`` and ``predict`` (once, whichever COMMANDS line comes first)."""
    if "package" in subparsers.choices:
        return
    p = subparsers.add_parser("package", help="bundle a run's artifact with a runner for deployment")
    p.add_argument("run_folder", help="the output folder of 'modelpress run' (or an artifact folder)")
    p.add_argument("-o", "--output", help="bundle folder or .zip (default RUN_FOLDER-bundle)")
    p.add_argument("--zip", action="store_true", help="write a .zip instead of a folder")
    p.add_argument("--runtime", help="run the bundle on this runtime instead of the run's")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(fn=cmd_package)
    q = subparsers.add_parser("predict", help="run a bundle on a .npy/.npz input")
    q.add_argument("bundle", help="a bundle folder or .zip")
    q.add_argument("input", help=".npy (a single-input model) or .npz (arrays named like the model's inputs)")
    q.add_argument("-o", "--output", help="write the outputs to this .npy/.npz file")
    q.add_argument("--runtime", help="another runtime that runs the bundle's format")
    q.set_defaults(fn=cmd_predict)


def runtime_settings(run: Path, override: str | None, fmt: str) -> dict[str, Any]:
    """Backend, threads and precision from the run's recipe.yaml (or defaults), checked against the format."""
    import yaml

    from . import registry
    from .config import parse, to_dict
    from .runtime import RuntimeConfig

    data: dict[str, Any] = {}
    if (run / "recipe.yaml").is_file():
        data = dict((yaml.safe_load((run / "recipe.yaml").read_text()) or {}).get("runtime") or {})
    elif override is None:
        data = {"backend": next((n for n in registry.RUNTIMES if fmt in registry.module("runtime", n).FORMATS), "")}
    if override:
        data["backend"] = override
    config = parse(RuntimeConfig, data, "runtime")
    formats = registry.module("runtime", config.backend).FORMATS
    if fmt not in formats:
        raise ConfigError(f"The {config.backend} runtime runs {', '.join(formats)} artifacts, not this bundle's "
                          f"'{fmt}'. Choose a runtime that runs '{fmt}'.")
    return to_dict(config)


def build(run: Path, stage: Path, override: str | None) -> dict[str, Any]:
    """Write the bundle's files into ``stage``; returns the bundle manifest."""
    from . import artifact

    art = artifact.load(run / "artifact" if (run / "artifact").is_dir() else run)
    manifest = {k: v for k, v in art.manifest.items() if k != "encoding"}
    if art.manifest.get("encoding"):
        plain = art.runnable_path()
        manifest["file"] = "model" + plain.suffix
        shutil.copyfile(plain, stage / manifest["file"])
        names = [manifest["file"]]
    else:
        names = list(art.manifest["files"])
        for name in names:
            shutil.copyfile(art.folder / name, stage / name)
    manifest["files"] = {n: artifact.sha256(stage / n) for n in names}
    manifest["runtime"] = runtime_settings(run, override, art.format)
    if (run / "result.json").is_file():
        result = json.loads((run / "result.json").read_text())
        manifest["measured"] = {k: result.get(k) for k in ("score", "baseline_score", "parity", "latency_ms",
                                                           "size_bytes", "runtime")}
    backend = manifest["runtime"]["backend"]
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    (stage / "preprocessing.json").write_text(json.dumps(
        {"inputs": manifest.get("inputs"), "outputs": manifest.get("outputs"),
         "preprocessing": manifest.get("preprocessing", {})}, indent=2))
    (stage / "predict.py").write_text(runner_source(backend))
    (stage / "requirements.txt").write_text(f"numpy\n{REQUIREMENTS.get(backend, backend)}\n")
    inputs = ", ".join(f"{n} {v['dtype']} {v['shape']}" for n, v in (manifest.get("inputs") or {}).items())
    (stage / "README.md").write_text(
        f"# {manifest.get('task', 'model')} on {backend}\n\n"
        f"    pip install -r requirements.txt\n    python predict.py input.npy -o output.npy\n\n"
        f"Inputs: {inputs} (a .npy for one input, or a .npz keyed by input name). "
        f"Preprocessing: see preprocessing.json. Outputs: {', '.join(manifest.get('outputs') or [])}.\n")
    return manifest


def runner_source(backend: str) -> str:
    """predict.py for ``backend``: the shared part plus that runtime's loader only."""
    loader = next(code for names, code in LOADERS.items() if backend in names)
    fixed = FIXED if backend in ("tflite", "executorch") else ""
    return RUNNER.replace("{requirement}", REQUIREMENTS.get(backend, backend)).replace("{fixed}", fixed) \
        .replace("{loader}", loader)


def cmd_package(args: argparse.Namespace) -> int:
    from .artifact import atomic_write_bytes
    from .cli import console
    from .pipeline import prepare_output, publish

    run = Path(args.run_folder)
    if not run.is_dir():
        raise ModelFileError(f"{run} is not a folder: give the output folder of 'modelpress run'.")
    zipped = args.zip or (args.output or "").endswith(".zip")
    out = Path(args.output or f"{run}-bundle" + (".zip" if zipped else ""))
    if zipped:
        if out.exists() and not args.force:
            raise ModelpressError(f"{out} already exists. Choose another name or pass --force to replace it.")
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(run, Path(tmp), args.runtime)
            buf = Path(tmp).with_suffix(".zip")
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(Path(tmp).iterdir()):
                    z.write(f, f.name)
            atomic_write_bytes(out, buf.read_bytes())
            buf.unlink()
    else:
        stage = prepare_output(out, args.force)
        try:
            manifest = build(run, stage, args.runtime)
            publish(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    console().print(f"wrote {out} ({manifest['format']} on {manifest['runtime']['backend']}); "
                    f"run it with 'modelpress predict {out} INPUT.npy' or 'python predict.py INPUT.npy' inside it")
    return 0


def open_bundle(path: Path, tmp: Path) -> Path:
    """The bundle folder (a zip is extracted into ``tmp`` after checking every member's path)."""
    if path.is_dir():
        return path
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is neither a bundle folder nor a bundle .zip: make one with 'modelpress package'.")
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                raise ModelFileError(f"{path} holds an unsafe path '{name}'; refusing to extract it.")
        z.extractall(tmp)
    return tmp


def read_inputs(path: Path, spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """Arrays from .npy/.npz (never unpickled), matched to the model's inputs with clear errors."""
    if not path.is_file():
        raise ModelFileError(f"Input file {path} does not exist.")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ModelFileError(f"{path} is not a readable .npy/.npz file ({str(e)[:200]}).") from None
    names = list(spec)
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ModelpressError(f"The model has {len(names)} inputs {names}: give a .npz with one array per input.")
        arrays = {names[0]: loaded}
    else:
        arrays = {k: loaded[k] for k in loaded.files}
        missing, extra = [n for n in names if n not in arrays], [k for k in arrays if k not in spec]
        if missing or extra:
            raise ModelpressError(f"{path} holds arrays {sorted(arrays)}; the model expects exactly {names}.")
    for name, want in spec.items():
        got, shape = arrays[name], want["shape"]
        if got.ndim == len(shape) - 1 and all(isinstance(d, str) or d == g for d, g in zip(shape[1:], got.shape)):
            raise ModelpressError(f"Input '{name}' has shape {list(got.shape)}: one sample without the batch axis. "
                                  f"The model expects {shape}; add a leading batch axis (x[None]).")
    return arrays


def cmd_predict(args: argparse.Namespace) -> int:
    from . import artifact
    from .cli import console
    from .config import parse
    from .runtime import RuntimeConfig, check_inputs, open_session

    with tempfile.TemporaryDirectory() as tmp:
        folder = open_bundle(Path(args.bundle), Path(tmp))
        art = artifact.load(folder)
        settings = dict(art.manifest.get("runtime") or {})
        if args.runtime:
            settings["backend"] = args.runtime
        spec = art.manifest["inputs"]
        inputs = read_inputs(Path(args.input), spec)
        check_inputs(inputs, spec)
        outputs = open_session(art, parse(RuntimeConfig, settings, "runtime")).run(inputs)
    names = list(art.manifest.get("outputs") or [f"output_{i}" for i in range(len(outputs))])
    con = console()
    for name, out in zip(names, outputs):
        top = f"; top-1 of the first rows: {out.reshape(len(out), -1).argmax(-1)[:8].tolist()}" if out.ndim == 2 else ""
        con.print(f"{name}: shape {list(out.shape)} {out.dtype}{top}")
    if args.output:
        from .artifact import atomic_write_bytes
        import io

        buf = io.BytesIO()
        if str(args.output).endswith(".npz"):
            np.savez(buf, **dict(zip(names, outputs)))
        else:
            if len(outputs) != 1:
                raise ConfigError(f"The model has {len(outputs)} outputs: write them to a .npz file.")
            np.save(buf, outputs[0])
        atomic_write_bytes(Path(args.output), buf.getvalue())
        con.print(f"wrote {args.output}")
    return 0


# ---- the standalone runner written into each bundle (numpy + one runtime; no modelpress) -------------

RUNNER = '''#!/usr/bin/env python3
"""Run this bundle's model: python predict.py INPUT.npy|INPUT.npz [-o OUTPUT.npy|OUTPUT.npz]

Needs numpy and {requirement} only. Inputs: see preprocessing.json (a .npy for a single-input model,
else a .npz with one array per input name).
"""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MANIFEST = json.loads((HERE / "manifest.json").read_text())
SETTINGS = MANIFEST["runtime"]
SPEC = MANIFEST["inputs"]
NAMES = list(SPEC)
PATH = str(HERE / MANIFEST["file"])
{fixed}{loader}

def read_inputs(path):
    data = np.load(path, allow_pickle=False)
    arrays = {NAMES[0]: data} if isinstance(data, np.ndarray) else {k: data[k] for k in data.files}
    if sorted(arrays) != sorted(NAMES):
        sys.exit(f"error: the model expects inputs {NAMES}, got {sorted(arrays)}")
    for name, want in SPEC.items():
        got, shape = arrays[name], want["shape"]
        if got.ndim != len(shape) or any(not isinstance(d, str) and d != g for d, g in zip(shape, got.shape)):
            sys.exit(f"error: input '{name}' has shape {list(got.shape)}, the model expects {shape}")
        if str(got.dtype) != want["dtype"]:
            sys.exit(f"error: input '{name}' has dtype {got.dtype}, the model expects {want['dtype']}")
    return [np.ascontiguousarray(arrays[n]) for n in NAMES]


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        sys.exit(__doc__)
    outputs = load()(read_inputs(argv[0]))
    names = MANIFEST.get("outputs") or [f"output_{i}" for i in range(len(outputs))]
    for name, out in zip(names, outputs):
        print(f"{name}: shape {list(out.shape)} {out.dtype}")
    if "-o" in argv:
        target = argv[argv.index("-o") + 1]
        if target.endswith(".npz"):
            np.savez(target, **dict(zip(names, outputs)))
        else:
            np.save(target, outputs[0])


if __name__ == "__main__":
    main(sys.argv[1:])
'''

FIXED = '''

def split(n, sizes):
    """Chunks (samples taken, compiled batch size) covering n samples: an exact size, else the next
    larger size when at most twice the remainder (padded), else the largest size that fits."""
    out, left = [], n
    while left > 0:
        above, fit = [s for s in sizes if s >= left], [s for s in sizes if s <= left]
        size = left if left in sizes else min(above) if above and min(above) <= 2 * left else max(fit) if fit \\
            else min(above)
        out.append((min(size, left), size))
        left -= min(size, left)
    return out


def fixed_batches(runners):
    """One run(arrays) over runners compiled for fixed batch sizes (MANIFEST['methods'])."""
    def run(arrays):
        pieces, start = [], 0
        for take, size in split(len(arrays[0]), sorted(runners)):
            chunk = [a[start:start + take] for a in arrays]
            if take < size:  # pad with copies of the last sample; their outputs are dropped
                chunk = [np.concatenate([c, np.repeat(c[-1:], size - take, axis=0)]) for c in chunk]
            pieces.append([o[:take] for o in runners[size](chunk)])
            start += take
        return [np.concatenate(outs) for outs in zip(*pieces)]
    return run
'''

LOADERS = {
    ("onnxruntime", "onnxruntime_cuda", "tensorrt"): '''

def load():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = SETTINGS.get("threads", 2)
    providers = {"onnxruntime": ["CPUExecutionProvider"],
                 "onnxruntime_cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                 "tensorrt": [("TensorrtExecutionProvider", {"trt_fp16_enable": SETTINGS.get("precision") in ("fp16", "auto"),
                                                              "trt_int8_enable": SETTINGS.get("precision") == "int8"}),
                              "CUDAExecutionProvider", "CPUExecutionProvider"]}[SETTINGS["backend"]]
    session = ort.InferenceSession(PATH, options, providers=providers)
    return lambda arrays: session.run(None, dict(zip(NAMES, arrays)))
''',
    ("openvino",): '''

def load():
    import openvino as ov

    hint = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}.get(SETTINGS.get("precision", "fp32"))
    props = {"INFERENCE_NUM_THREADS": SETTINGS.get("threads", 2), "PERFORMANCE_HINT": "LATENCY"}
    if hint:
        props["INFERENCE_PRECISION_HINT"] = hint
    compiled = ov.Core().compile_model(PATH, "CPU", props)
    request = compiled.create_infer_request()

    def run(arrays):
        request.infer(dict(zip(NAMES, arrays)))
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]
    return run
''',
    ("tflite",): '''

def load():
    import re

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=PATH, num_threads=SETTINGS.get("threads", 2))
    index = lambda name: int((re.findall(r"(\\d+)$", name) or [0])[0])

    def runner(signature):
        sig = interpreter.get_signature_runner(signature)
        ins, outs = sig.get_input_details(), sig.get_output_details()

        def run(arrays):
            feed = {}
            for name, a in zip(sorted(ins, key=index), arrays):
                scale, zero = ins[name]["quantization"]
                dtype = np.dtype(ins[name]["dtype"])
                if dtype.kind in "iu" and a.dtype.kind == "f" and scale:  # int8 model: quantize the input
                    a = np.clip(np.round(a / scale) + zero, np.iinfo(dtype).min, np.iinfo(dtype).max)
                feed[name] = a.astype(dtype)
            result = sig(**feed)
            out = []
            for name in sorted(outs, key=index):
                scale, zero = outs[name]["quantization"]
                y = result[name]
                out.append((y.astype(np.float32) - zero) * scale if y.dtype.kind in "iu" and scale else y)
            return out
        return run

    runners = {int(b): runner(name) for b, name in MANIFEST["methods"].items()}
    return fixed_batches(runners)
''',
    ("executorch",): '''

def load():
    import torch
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(PATH)

    def runner(name):
        method = program.load_method(name)
        return lambda arrays: [o.numpy().copy() for o in method.execute([torch.from_numpy(a) for a in arrays])]

    return fixed_batches({int(b): runner(name) for b, name in MANIFEST["methods"].items()})
''',
    ("torch", "torch_cuda"): '''

def load():
    import torch

    device = "cuda" if SETTINGS["backend"] == "torch_cuda" else "cpu"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "auto": torch.float16}.get(SETTINGS.get("precision"))
    module = torch.export.load(PATH).module().to(device)
    if device == "cuda" and dtype is not None:
        module = module.to(dtype)

    def run(arrays):
        tensors = [torch.from_numpy(a).to(device) for a in arrays]
        if device == "cuda" and dtype is not None:
            tensors = [t.to(dtype) if t.is_floating_point() else t for t in tensors]
        with torch.inference_mode():
            out = module(*tensors)
        return [o.float().cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]
    return run
''',
}
