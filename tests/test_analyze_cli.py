"""``modelpress analyze``: tables, profile, sensitivities and advice printed; JSON and SVG plots written."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "modelpress", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)


def test_analyze_digits_prints_everything_and_writes_files(tmp_path):
    out = tmp_path / "analysis"
    proc = cli("analyze", "digits", "-o", str(out), "--samples", "200", "--probes", "int8,prune30",
               "--batch-sizes", "1,8")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for needle in ("layers of DigitsCNN", "time per op type", "score drop with only that layer compressed",
                   "advice", "features.3", "Conv", "wrote"):
        assert needle in text, needle
    result = json.loads((out / "analysis.json").read_text())
    assert result["task"] == "digits" and result["sensitivity"]["samples"] == 200
    assert set(result["sensitivity"]["probes"]) == {"int8", "prune30"}
    assert {p.name for p in out.iterdir()} == {"analysis.json", "sensitivity.svg", "op_time.svg", "layers.svg"}
    assert (out / "sensitivity.svg").read_text().startswith("<svg")


def test_analyze_bad_input_is_a_clean_error(tmp_path):
    proc = cli("analyze", "digits", "--probes", "int3", "-o", str(tmp_path / "x"))
    assert proc.returncode == 2 and "Unknown probe" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("analyze", "digitz", "-o", str(tmp_path / "y"))
    assert proc.returncode == 2 and "Unknown task 'digitz'" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
