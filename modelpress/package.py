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

from ._bundle_runner import REQUIREMENTS, runner_source
from .errors import ConfigError, ModelFileError, ModelpressError


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


def cmd_package(args: argparse.Namespace) -> int:
    from .artifact import atomic_write_bytes
    from .terminal import console
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
    from .terminal import console
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
