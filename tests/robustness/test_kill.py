"""Kill a running `modelpress run` at random moments: no partial output is ever left, and a rerun completes."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelpress import artifact

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """task: digits
export: {format: onnx}
runtime: {backend: onnxruntime, threads: 1}
bench: {batch_sizes: [1, 8], warmup: 1, rounds: 3, runs_per_round: 3}
"""


def start(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "modelpress", "run", str(recipe), "-o", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def assert_complete_or_absent(out: Path) -> bool:
    """The output folder is either absent or complete and consistent; no partial artifact anywhere."""
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.partial-")]
    if not out.exists():
        return False
    assert sorted(p.name for p in out.iterdir()) == [".modelpress-output", "artifact", "recipe.yaml", "report.md",
                                                     "result.json"]
    assert json.loads((out / "result.json").read_text())["error"] is None
    artifact.load(out / "artifact")  # every file matches its hash
    assert not leftovers or all(not (out.parent / name / "result.json").exists() for name in leftovers)
    return True


def test_killed_runs_leave_nothing_partial_and_rerun_completes(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    rng = random.Random(1234)
    t0 = time.perf_counter()
    full = start(recipe, tmp_path / "timing")
    assert full.wait(timeout=300) == 0, full.stderr.read()
    duration = time.perf_counter() - t0
    kills = attempts = 0
    while kills < 10 and attempts < 20:  # a run that happens to finish before its kill is checked, then retried
        out = tmp_path / f"out{attempts % 3}"
        attempts += 1
        proc = start(recipe, out, "--force")
        time.sleep(rng.uniform(0.05, duration * 0.8))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        assert_complete_or_absent(out)
    assert kills >= 10, f"only {kills} of {attempts} runs were still running when killed"
    for i in range(3):
        out = tmp_path / f"out{i}"
        proc = start(recipe, out, "--force")
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        assert assert_complete_or_absent(out)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".out{i}.")], "stale staging left behind"
