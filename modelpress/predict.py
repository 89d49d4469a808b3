"""``modelpress predict BUNDLE INPUT``: run a deployment bundle (folder or zip) on a .npy/.npz input.

The bundle is checked first (every file against its hash, nothing unlisted, no path outside it), the
input is read without unpickling and within its header's promise (``npfile``), and an output file never
replaces the input, a file of the bundle or, without ``--force``, an existing file. Non-finite inputs
or outputs and empty batches are errors unless ``--allow-nonfinite`` is given (for the former).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, ModelFileError, ModelpressError, shown

MAX_BUNDLE_MEMBERS = 1000


def register(subparsers: Any) -> None:
    q = subparsers.add_parser("predict", help="run a bundle on a .npy/.npz input")
    q.add_argument("bundle", help="a bundle folder or .zip")
    q.add_argument("input", help=".npy (a single-input model) or .npz (arrays named like the model's inputs)")
    q.add_argument("-o", "--output", help="write the outputs to this .npy/.npz file")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q.add_argument("--runtime", help="another runtime that runs the bundle's format")
    q.add_argument("--allow-nonfinite", action="store_true",
                   help="accept NaN or Inf in the inputs and outputs (an error by default)")
    q.set_defaults(fn=cmd_predict)


def open_bundle(path: Path, tmp: Path) -> Path:
    """The bundle folder (a zip is extracted into ``tmp`` after checking every member's path and size)."""
    from .artifact import inside

    if path.is_dir():
        return path
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ModelFileError(f"{shown(path)} is neither a bundle folder nor a bundle .zip: make one with "
                             f"'modelpress package'.")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
            if len(members) > MAX_BUNDLE_MEMBERS:
                raise ModelFileError(f"{shown(path)} holds {len(members):,} entries; a bundle holds a few.")
            names = [m.filename[:-1] if m.is_dir() else m.filename for m in members]
            for name in names:
                try:
                    inside(tmp, name)
                except ModelFileError:
                    raise ModelFileError(f"{shown(path)} holds an unsafe path {shown(repr(name), 80)}; refusing to "
                                         f"extract it.") from None
            if len(set(names)) != len(names):
                raise ModelFileError(f"{shown(path)} holds one path twice; refusing it.")
            needed, free = sum(m.file_size for m in members), shutil.disk_usage(tmp).free
            if needed > free // 2:
                raise ModelFileError(f"{shown(path)} unpacks to {needed:,} bytes, more than half the {free:,} free "
                                     f"in {tmp.parent}; refusing it.")
            z.extractall(tmp)
    except ModelFileError:
        raise
    except Exception as e:  # BadZipFile, CRC errors, encrypted members
        raise ModelFileError(f"{shown(path)} is not a readable bundle .zip ({shown(e, 150)}).") from None
    return tmp


def nonfinite(array: np.ndarray) -> int:
    """Samples (rows along axis 0) holding NaN or Inf; 0 for integer arrays."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return 0
    bad = ~np.isfinite(array)
    return int(bad.reshape(len(bad), -1).any(axis=1).sum()) if array.ndim else int(bad)


def read_inputs(path: Path, spec: dict[str, Any], allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """Arrays from .npy/.npz (``npfile``: never unpickled), matched to the model's inputs with clear errors."""
    from .npfile import read_arrays
    from .runtime import check_inputs

    loaded = read_arrays(path)
    names = list(spec)
    if isinstance(loaded, np.ndarray):
        if len(names) != 1:
            raise ModelpressError(f"The model has {len(names)} inputs {names}: give a .npz with one array per input.")
        arrays = {names[0]: loaded}
    else:
        arrays = loaded
        if sorted(arrays) != sorted(names):
            raise ModelpressError(f"{shown(path)} holds arrays {shown(sorted(arrays), 200)}; the model expects "
                                  f"exactly {names}.")
    for name, want in spec.items():
        got, shape = arrays[name], want["shape"]
        if got.ndim == len(shape) - 1 and all(isinstance(d, str) or d == g for d, g in zip(shape[1:], got.shape)):
            raise ModelpressError(f"Input '{name}' has shape {list(got.shape)}: one sample without the batch axis. "
                                  f"The model expects {shape}; add a leading batch axis (x[None]).")
    check_inputs(arrays, spec)
    sizes = {len(a) for a in arrays.values() if a.ndim}
    if 0 in sizes:
        raise ModelpressError(f"{shown(path)} holds 0 samples; give at least one.")
    if len(sizes) > 1:
        raise ModelpressError(f"The inputs in {shown(path)} hold different numbers of samples {sorted(sizes)}; "
                              f"they must match.")
    for name, a in arrays.items():
        bad = nonfinite(a)
        if bad and not allow_nonfinite:
            raise ModelpressError(f"Input '{name}' holds NaN or Inf in {bad} of {len(a) if a.ndim else 1} sample(s); "
                                  f"the outputs would be meaningless. Fix the input, or pass --allow-nonfinite.")
    return arrays


def cmd_predict(args: argparse.Namespace) -> int:
    import io

    from . import artifact, outdir
    from .terminal import console, plain
    from .config import parse
    from .npfile import npz_bytes
    from .runtime import RuntimeConfig, open_session

    bundle, source = Path(args.bundle), Path(args.input)
    target = outdir.check_output_file(args.output, args.force, inputs=[bundle, source]) if args.output else None
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        folder = open_bundle(bundle, Path(tmp))
        art = artifact.load(folder)
        settings = art.manifest.get("runtime") or {}
        if not isinstance(settings, dict):
            raise ModelFileError(f"The manifest of {shown(bundle)} is damaged ('runtime' is not a mapping).")
        settings = {**settings, **({"backend": args.runtime} if args.runtime else {})}
        spec = art.manifest["inputs"]
        inputs = read_inputs(source, spec, args.allow_nonfinite)
        outputs = open_session(art, parse(RuntimeConfig, settings, "runtime")).run(inputs)
    listed = list(art.manifest.get("outputs") or [])
    names = listed if len(listed) == len(outputs) else [f"output_{i}" for i in range(len(outputs))]
    con = console()
    for name, out in zip(names, outputs):
        bad = nonfinite(out)
        if bad and not args.allow_nonfinite:
            raise ModelpressError(f"The model produced NaN or Inf in output '{shown(name, 60)}' for {bad} of {len(out)} "
                                  f"sample(s); nothing was written. Check the inputs' range and preprocessing "
                                  f"(preprocessing.json), or pass --allow-nonfinite to write them anyway.")
        top = ""
        if out.ndim == 2 and len(out):
            first = out[:8]
            rows = [int(r.argmax()) if np.isfinite(r).all() else "nan" for r in first]
            top = f"; top-1 of the first rows: {rows}"
        con.print(plain(f"{shown(name, 60)}: shape {list(out.shape)} {out.dtype}{top}"
                        + (f" ({bad} sample(s) hold NaN or Inf)" if bad else "")))
    if target is not None:
        if target.suffix == ".npz":
            data = npz_bytes(dict(zip(names, outputs)))
        else:
            if len(outputs) != 1:
                raise ConfigError(f"The model has {len(outputs)} outputs: write them to a .npz file.")
            buf = io.BytesIO()
            np.save(buf, outputs[0], allow_pickle=False)
            data = buf.getvalue()
        artifact.atomic_write_bytes(target, data)
        con.print(plain(f"wrote {args.output}"))
    return 0
