"""Temporary files live in the run's staging folder or in the command's scratch folder; a killed command's
leftovers are removed by the next command, so nothing piles up in the system's temporary folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from modelpress.locks import SCRATCH, scratch

from .hostile import ROOT, modelpress

RECIPE = "task: digits\nbench: {batch_sizes: [1, 8], warmup: 1, rounds: 20, runs_per_round: 5}\n"


def test_a_killed_run_leaves_no_temporary_files_behind(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen([sys.executable, "-m", "modelpress", "run", str(recipe), "-o", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:  # until the baseline model is being exported
        if any(tmp_path.glob(".out.partial-*/.baseline-*/*")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    baseline = next(tmp_path.glob(".out.partial-*/.baseline-*"))  # inside the staging folder, not in TMPDIR
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert baseline.exists() and [p.name for p in tmp.iterdir()][0].startswith(SCRATCH)
    assert modelpress("tasks", env={"TMPDIR": str(tmp)}).returncode == 0  # any next command sweeps the scratch
    assert list(tmp.iterdir()) == []
    assert modelpress("run", str(recipe), "-o", str(out), env={"TMPDIR": str(tmp)}).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml", "tmp"] and list(tmp.iterdir()) == []


def test_scratch_folders_of_live_commands_are_left_alone(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch() as mine:
        assert tempfile.gettempdir() == str(mine) and Path(tempfile.mkdtemp()).parent == mine
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        with scratch() as other:  # a second command sweeping while the first runs
            assert mine.exists() and other.exists()
        assert mine.exists() and not other.exists()
    assert list(tmp_path.iterdir()) == []
