"""Deployment bundles: ``modelpress package RUN_FOLDER`` (``modelpress predict BUNDLE INPUT`` runs one).

A bundle is a folder (or a zip of one) holding the artifact's files, ``manifest.json`` (the artifact's
manifest plus the runtime settings of the run), ``preprocessing.json`` (what the inputs must look like),
``predict.py`` (a runner that needs only numpy and the chosen runtime, not modelpress),
``requirements.txt`` and ``README.md``. Encoded artifacts (sparse, clustered, packed) are decoded to the
plain file the runtime opens, so the runner needs no modelpress codec. Every file is hashed in
``manifest.json`` (the model's under ``files``, the runner's and notes' under ``support_files``), and both
``modelpress predict`` and ``predict.py`` refuse a bundle whose files do not match or that holds others.

>>> import subprocess  # doctest: +SKIP
>>> subprocess.run(["modelpress", "package", "runs/baseline", "-o", "bundle"])  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

from ._bundle_runner import REQUIREMENTS, runner_source
from .errors import ConfigError, ModelFileError, shown

SUPPORT_FILES = ("predict.py", "README.md", "requirements.txt", "preprocessing.json")
MAX_RESULT_BYTES = 16 << 20


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("package", help="bundle a run's artifact with a runner for deployment")
    p.add_argument("run_folder", help="the output folder of 'modelpress run' (or an artifact folder)")
    p.add_argument("-o", "--output", help="bundle folder or .zip (default RUN_FOLDER-bundle)")
    p.add_argument("--zip", action="store_true", help="write a .zip instead of a folder")
    p.add_argument("--runtime", help="run the bundle on this runtime instead of the run's")
    p.add_argument("--force", action="store_true", help="replace a bundle modelpress made earlier")
    p.set_defaults(fn=cmd_package)


def runtime_settings(run: Path, override: str | None, fmt: str) -> dict[str, Any]:
    """Backend, threads and precision from the run's recipe.yaml (or defaults), checked against the format."""
    from . import registry
    from .config import parse, to_dict
    from .runtime import RuntimeConfig
    from .safeyaml import load_file

    data: dict[str, Any] = {}
    if (run / "recipe.yaml").is_file():
        recipe = load_file(run / "recipe.yaml")
        runtime = recipe.get("runtime") if isinstance(recipe, dict) else None
        if runtime is not None and not isinstance(runtime, dict):
            raise ConfigError(f"{shown(run / 'recipe.yaml')}: 'runtime' must be a mapping of settings.")
        data = dict(runtime or {})
    elif override is None:
        data = {"backend": next((n for n in registry.RUNTIMES if fmt in registry.module("runtime", n).FORMATS), "")}
    if override:
        data["backend"] = override
    config = parse(RuntimeConfig, data, "runtime")
    formats = registry.module("runtime", config.backend).FORMATS
    if fmt not in formats:
        raise ConfigError(f"The {config.backend} runtime runs {', '.join(formats)} artifacts, not this bundle's "
                          f"'{shown(fmt, 40)}'. Choose a runtime that runs it.")
    return to_dict(config)


def measured(run: Path) -> dict[str, Any] | None:
    """The headline numbers of the run's result.json, if it has a readable one."""
    path = run / "result.json"
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise ValueError("too large")
        result = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        raise ModelFileError(f"{shown(path)} is damaged (not readable JSON); run the recipe again.") from None
    if not isinstance(result, dict):
        raise ModelFileError(f"{shown(path)} is damaged (not a result); run the recipe again.")
    return {k: result.get(k) for k in ("score", "baseline_score", "parity", "latency_ms", "size_bytes", "runtime")}


def build(run: Path, stage: Path, override: str | None) -> dict[str, Any]:
    """Write the bundle's files into ``stage``; returns the bundle manifest."""
    from . import artifact

    art = artifact.load(run / "artifact" if (run / "artifact").is_dir() else run)
    manifest = {k: v for k, v in art.manifest.items() if k not in ("encoding", artifact.SUPPORT)}
    if art.manifest.get("encoding"):
        plain = art.runnable_path()
        manifest["file"] = "model" + plain.suffix
        shutil.copyfile(plain, stage / manifest["file"])
        names = [manifest["file"]]
    else:
        names = list(art.manifest["files"])
        for name in names:
            if name in SUPPORT_FILES:
                raise ModelFileError(f"The artifact holds a file named {name}, which a bundle keeps for its runner; "
                                     f"re-export the model.")
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(artifact.inside(art.folder, name), stage / name)
    manifest["files"] = {n: artifact.sha256(stage / n) for n in names}
    manifest["runtime"] = runtime_settings(run, override, art.format)
    numbers = measured(run)
    if numbers is not None:
        manifest["measured"] = numbers
    backend = manifest["runtime"]["backend"]
    (stage / "preprocessing.json").write_text(json.dumps(
        {"inputs": manifest.get("inputs"), "outputs": manifest.get("outputs"),
         "preprocessing": manifest.get("preprocessing", {})}, indent=2, default=str))
    (stage / "predict.py").write_text(runner_source(backend))
    (stage / "requirements.txt").write_text(f"numpy\n{REQUIREMENTS.get(backend, backend)}\n")
    inputs = ", ".join(f"{n} {v['dtype']} {v['shape']}" for n, v in (manifest.get("inputs") or {}).items())
    (stage / "README.md").write_text(
        f"# {shown(manifest.get('task', 'model'))} on {backend}\n\n"
        f"    pip install -r requirements.txt\n    python predict.py input.npy -o output.npy\n\n"
        f"Inputs: {inputs} (a .npy for one input, or a .npz keyed by input name). "
        f"Preprocessing: see preprocessing.json. Outputs: {', '.join(manifest.get('outputs') or [])}.\n"
        f"predict.py first checks every file against its sha256 in manifest.json.\n")
    manifest[artifact.SUPPORT] = {n: artifact.sha256(stage / n) for n in SUPPORT_FILES}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def cmd_package(args: argparse.Namespace) -> int:
    from . import outdir
    from .artifact import files_in as artifact_files
    from .terminal import console, plain

    run = Path(args.run_folder)
    if not run.is_dir():
        raise ModelFileError(f"{shown(run)} is not a folder: give the output folder of 'modelpress run'.")
    zipped = args.zip or (args.output or "").endswith(".zip")
    default = outdir.normal(run)
    out = Path(args.output or default.with_name(default.name + "-bundle" + (".zip" if zipped else "")))
    stage = outdir.prepare_output(out, args.force, inputs=[run], file=zipped)
    try:
        manifest = build(run, stage, args.runtime)
        if zipped:
            outdir.mark(stage)
            names = artifact_files(stage)
            tmp = stage / ".bundle.zip"
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
                for name in names:
                    z.write(stage / name, name)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out)
        else:
            outdir.publish(stage, out)
    finally:
        outdir.discard(stage)
    console().print(plain(f"wrote {out} ({manifest['format']} on {manifest['runtime']['backend']}); run it with "
                          f"'modelpress predict {out} INPUT.npy' or 'python predict.py INPUT.npy' inside it"))
    return 0
