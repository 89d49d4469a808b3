"""Do two commits compute the same results? The same recipes on the same fixed model and data, run by each
commit's own ``modelpress run``, compared: score, artifact size, the artifact's bytes and its outputs.

    python benchmarks/same_results.py --revs 9f0eb3d,e71b893 --out runs/same-results [--json rows.json]
                                      [--after-quantize '{"reduce_range": "off"}']

For a refactor (issue 22): a change that should move no number. The model is a small digits CNN whose weights
are trained once here and saved (``weights.pt``); the data is scikit-learn's digits, split once and saved
(``digits.npz``). Both commits read them through one user task (``same_task:task``, written next to them),
which gives its held-out part as both validation and test data, so a commit that decides on validation and
one that decides on the evaluation split decide on the same samples. Each recipe is one of the shipped
recipes' steps (training steps included: they are seeded), run with each commit's command line in its own
worktree and process; timing is cut to a minimum (latency is not compared: it is not deterministic).

Columns per recipe: each commit's score and size, ``same_bytes`` (every artifact file but the manifest
identical), ``max_abs_diff`` (the two artifacts' outputs on the test inputs, both run on ONNX Runtime by this
checkout's loader), or the error a commit gave. A result already in ``--out`` for the same recipe is reused.
``--after-quantize`` adds settings to the second commit's quantize steps: for a setting that commit introduced
whose default changes results by design (7-bit weights on CPUs without VNNI: ``reduce_range: auto``).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import parser

ROOT = Path(__file__).resolve().parents[1]
STEPS = {  # the steps of the shipped recipes that run on a labelled CNN, as written before the refactor
    "quantize dynamic": [{"quantize": {"mode": "dynamic"}}],
    "quantize static": [{"quantize": {"mode": "static", "calibration": "mse", "per_channel": True}}],
    "quantize weight_only int4": [{"quantize": {"mode": "weight_only", "bits": 4, "group_size": 32}}],
    "quantize mixed": [{"quantize": {"mode": "mixed", "max_score_drop": 0.005}}],
    "prune channel 0.5": [{"prune": {"method": "channel", "ratio": 0.5, "importance": "l2", "round_to": 1,
                                     "epochs": 1}}],
    "prune magnitude 0.8": [{"prune": {"method": "magnitude", "ratio": 0.8, "steps": 2, "epochs": 1}}],
    "cluster 16": [{"cluster": {"clusters": 16, "epochs": 1, "lr": 0.0001}}],
    "deep compression": [{"prune": {"method": "magnitude", "ratio": 0.8, "scope": "global", "steps": 2, "epochs": 1,
                                    "lr": 0.001}},
                         {"finetune": {"epochs": 1, "lr": 0.0001}},
                         {"cluster": {"clusters": 32, "init": "linear", "entropy": "huffman"}},
                         {"finetune": {"epochs": 1, "lr": 0.0001}}],
    "prune + distill": [{"prune": {"method": "channel", "ratio": 0.5, "importance": "l2", "round_to": 1}},
                        {"distill": {"epochs": 1, "alpha": 0.5, "temperature": 4.0}}],
}
TASK_MODULE = '''"""The fixed model and data that benchmarks/same_results.py runs on every commit it compares."""
import dataclasses
import os

import numpy as np
import torch

from modelpress.task import Batches, Task

HERE = os.environ["SAME_RESULTS_DIR"]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(),
                                        torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))


def build_model():
    model = Net()
    model.load_state_dict(torch.load(os.path.join(HERE, "weights.pt"), weights_only=True))
    return model.eval()


def task():
    d = np.load(os.path.join(HERE, "digits.npz"))
    held_out = Batches({"x": d["x_test"]}, d["y_test"], batch_size=64)
    split = ({"val_data": held_out, "test_data": held_out}
             if "val_data" in {f.name for f in dataclasses.fields(Task)} else {"eval_data": held_out})
    return Task(name="same-digits", build_model=build_model, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": d["x_train"][:256]}, batch_size=32),
                train_data=Batches({"x": d["x_train"]}, d["y_train"], batch_size=32, shuffle=True, seed=0),
                num_classes=10, **split)
'''


def prepare(out: Path) -> None:
    """digits.npz, weights.pt (trained here, seeded) and same_task.py in ``out``."""
    import torch
    from sklearn.datasets import load_digits

    out.mkdir(parents=True, exist_ok=True)
    (out / "same_task.py").write_text(TASK_MODULE)
    if (out / "weights.pt").exists():
        return
    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32)[:, None], data.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    np.savez(out / "digits.npz", x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    sys.path.insert(0, str(out))
    os.environ["SAME_RESULTS_DIR"] = str(out)
    from same_task import Net

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(10):
        for i in torch.randperm(len(xt)).split(32):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i]), yt[i]).backward()
            opt.step()
    torch.save(model.eval().state_dict(), out / "weights.pt")


def run_rev(rev: str, out: Path, quantize_settings: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every recipe of STEPS with ``rev``'s own command line, in a worktree of ``rev`` (``quantize_settings``
    added to every quantize step). A recipe whose folder already holds a result of the same recipe is read,
    not run again."""
    import yaml

    tree = out / f"tree-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                       capture_output=True)
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{out}", "SAME_RESULTS_DIR": str(out)}
    found = {}
    label = rev + ("+" + ",".join(f"{k}={v}" for k, v in quantize_settings.items()) if quantize_settings else "")
    for name, steps in STEPS.items():
        steps = [{k: {**v, **quantize_settings} if k == "quantize" and quantize_settings else v
                  for k, v in step.items()} for step in steps]
        folder = out / label / name.replace(" ", "-")
        recipe = {"task": "same_task:task", "steps": steps, "export": {"format": "onnx"},
                  "runtime": {"backend": "onnxruntime", "device": "cpu", "threads": 2},
                  "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 1}}
        folder.parent.mkdir(parents=True, exist_ok=True)
        path, text = out / label / f"{folder.name}.yaml", yaml.safe_dump(recipe, sort_keys=False)
        result = folder / "result.json"
        if not (result.exists() and path.exists() and path.read_text() == text):
            path.write_text(text)
            result.unlink(missing_ok=True)
            done = subprocess.run([sys.executable, "-m", "modelpress", "run", str(path), "-o", str(folder), "--force"],
                                  cwd=tree, env=env, capture_output=True, text=True)
        if not result.exists():
            found[name] = {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        else:
            r = json.loads(result.read_text())
            found[name] = {"score": r.get("score"), "size_bytes": r.get("size_bytes"), "artifact": str(folder / "artifact")}
        print(f"  {label} {name}: {found[name]}", flush=True)
    return found


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def outputs(folder: Path, x: np.ndarray) -> np.ndarray | None:
    """The artifact's logits on ``x`` through this checkout's loader and ONNX Runtime, or None if it cannot."""
    from modelpress.artifact import load
    from modelpress.runtime import RuntimeConfig, open_session

    try:
        return np.asarray(open_session(load(folder), RuntimeConfig(threads=2)).run({"x": x})[0])
    except Exception:  # noqa: BLE001 - an artifact this checkout cannot open is compared by bytes only
        return None


def compare(a: dict[str, Any], b: dict[str, Any], x: np.ndarray) -> dict[str, Any]:
    if "error" in a or "error" in b:
        return {"same_bytes": None, "max_abs_diff": None}
    ya, yb = outputs(Path(a["artifact"]), x), outputs(Path(b["artifact"]), x)
    return {"same_bytes": digest(Path(a["artifact"])) == digest(Path(b["artifact"])),
            "max_abs_diff": None if ya is None or yb is None else float(np.abs(ya - yb).max())}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--revs", required=True, help="two commits, comma-separated (before,after)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "same-results")
    p.add_argument("--after-quantize", type=json.loads, default=None, metavar="JSON",
                   help="settings added to every quantize step of the second commit: a setting it introduced whose "
                        "default changes results by design (e.g. '{\"reduce_range\": \"off\"}')")
    args = p.parse_args()
    before, after = args.revs.split(",")
    out = args.out.resolve()
    prepare(out)
    results = {before: run_rev(before, out), after: run_rev(after, out, args.after_quantize)}
    x = np.load(out / "digits.npz")["x_test"]
    rows = []
    for name in STEPS:
        a, b = results[before][name], results[after][name]
        rows.append({"recipe": name, **{f"{k}@{rev}": v for rev, r in ((before, a), (after, b))
                                        for k, v in r.items() if k != "artifact"}, **compare(a, b, x)})
    cols = list(dict.fromkeys(k for r in rows for k in r))
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "-")) for c in cols))
    ran = [name for name in STEPS if "error" not in results[before][name] and "error" not in results[after][name]]
    same = sum(all(results[before][n][k] == results[after][n][k] for k in ("score", "size_bytes")) for n in ran)
    print(f"{same} of {len(rows)} recipes give the same score and size at {before} and {after}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
