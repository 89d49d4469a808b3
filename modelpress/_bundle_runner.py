"""The standalone ``predict.py`` written into each deployment bundle: numpy and one runtime, no modelpress."""
from __future__ import annotations

REQUIREMENTS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert",
                "executorch": "executorch", "torch": "torch", "torch_cuda": "torch", "tensorrt": "onnxruntime-gpu",
                "onnxruntime_cuda": "onnxruntime-gpu"}


def runner_source(backend: str) -> str:
    """predict.py for ``backend``: the shared part plus that runtime's loader only."""
    loader = next(code for names, code in LOADERS.items() if backend in names)
    fixed = FIXED if backend in ("tflite", "executorch") else ""
    return RUNNER.replace("{requirement}", REQUIREMENTS.get(backend, backend)).replace("{fixed}", fixed) \
        .replace("{loader}", loader)


RUNNER = '''#!/usr/bin/env python3
"""Run this bundle's model: python predict.py INPUT.npy|INPUT.npz [-o OUTPUT.npy|OUTPUT.npz] [--force]
[--allow-nonfinite]

Needs numpy and {requirement} only. Inputs: see preprocessing.json (a .npy for a single-input model,
else a .npz with one array per input name). Before the model loads, every file of this folder is checked
against its sha256 in manifest.json, and a file the manifest does not list is refused.
"""
import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
UNLISTED = ("manifest.json", ".modelpress-output")
try:
    MANIFEST = json.loads((HERE / "manifest.json").read_text())
    SETTINGS, SPEC, FILES = MANIFEST["runtime"], MANIFEST["inputs"], MANIFEST["files"]
    SUPPORT = MANIFEST.get("support_files", {})
    NAMES = list(SPEC)
    PATH = str(HERE / MANIFEST["file"])
    if not all(isinstance(t, dict) for t in (SETTINGS, SPEC, FILES, SUPPORT)):
        raise TypeError("runtime, inputs, files and support_files must be mappings")
except (OSError, ValueError, KeyError, TypeError) as e:
    sys.exit(f"error: manifest.json is missing or damaged ({e}); package the model again")
{fixed}{loader}

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify():
    """Every listed file is a plain file inside this folder with its recorded hash; no other file is here."""
    listed = {**FILES, **SUPPORT}
    if MANIFEST["file"] not in FILES:
        sys.exit("error: manifest.json does not list the model file with its hash; package the model again")
    for name, digest in listed.items():
        path = HERE / str(name)
        if (not isinstance(name, str) or ".." in Path(name).parts or path.is_symlink()
                or HERE not in path.resolve().parents):
            sys.exit(f"error: manifest.json names {name!r}, which is not a file inside this bundle; refusing it")
        if not path.is_file():
            sys.exit(f"error: {name} is missing from this bundle; package the model again")
        if sha256(path) != digest:
            sys.exit(f"error: {name} does not match its sha256 in manifest.json (modified or damaged); "
                     f"package the model again")
    for root, dirs, files in os.walk(HERE):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files + [d for d in dirs if Path(root, d).is_symlink()]:
            rel = Path(root, name).relative_to(HERE).as_posix()
            if rel not in listed and rel not in UNLISTED:
                sys.exit(f"error: {rel} is not part of this bundle (manifest.json does not list it); remove it")


def read_inputs(path, allow_nonfinite):
    try:
        data = np.load(path, allow_pickle=False)
        arrays = {NAMES[0]: data} if isinstance(data, np.ndarray) else {k: data[k] for k in data.files}
    except Exception as e:  # unreadable, pickled objects, or a header promising more than the file holds
        sys.exit(f"error: {path} is not a readable .npy/.npz file of numbers ({e})")
    if sorted(arrays) != sorted(NAMES):
        sys.exit(f"error: the model expects inputs {NAMES}, got {sorted(arrays)}")
    for name, want in SPEC.items():
        got, shape = arrays[name], want["shape"]
        if got.ndim != len(shape) or any(not isinstance(d, str) and d != g for d, g in zip(shape, got.shape)):
            sys.exit(f"error: input '{name}' has shape {list(got.shape)}, the model expects {shape}")
        if str(got.dtype) != want["dtype"]:
            sys.exit(f"error: input '{name}' has dtype {got.dtype}, the model expects {want['dtype']}")
        if got.ndim and len(got) == 0:
            sys.exit(f"error: input '{name}' holds 0 samples; give at least one")
        if got.dtype.kind in "fc" and not allow_nonfinite and not np.isfinite(got).all():
            sys.exit(f"error: input '{name}' holds NaN or Inf; fix it, or pass --allow-nonfinite")
    return [np.ascontiguousarray(arrays[n]) for n in NAMES]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("-o", "--output")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.add_argument("--allow-nonfinite", action="store_true", help="accept NaN or Inf in inputs and outputs")
    args = parser.parse_args(argv)
    if args.output:
        target = Path(args.output).resolve()
        if target == Path(args.input).resolve() or HERE in target.parents:
            sys.exit("error: the output would replace the input or a file of this bundle; choose another name")
        if target.exists() and not args.force:
            sys.exit(f"error: {args.output} exists; choose another name or pass --force")
    verify()
    outputs = load()(read_inputs(args.input, args.allow_nonfinite))
    names = MANIFEST.get("outputs") or []
    names = names if len(names) == len(outputs) else [f"output_{i}" for i in range(len(outputs))]
    for name, out in zip(names, outputs):
        if out.dtype.kind in "fc" and not args.allow_nonfinite and not np.isfinite(out).all():
            sys.exit(f"error: the model produced NaN or Inf in output '{name}'; nothing was written. "
                     f"Check the inputs (preprocessing.json), or pass --allow-nonfinite")
        print(f"{name}: shape {list(out.shape)} {out.dtype}")
    if args.output:
        if args.output.endswith(".npz"):
            np.savez(args.output, **dict(zip(names, outputs)))
        else:
            np.save(args.output, outputs[0], allow_pickle=False)


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
