"""Resource errors are reported clearly, with what was saved, and never leave partial outputs."""
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelpress import artifact, cli, registry
from modelpress.errors import ModelpressError
from modelpress.pipeline import run
from modelpress.recipe import load_recipe

from ..conftest import fast

ROOT = Path(__file__).resolve().parents[2]


def test_disk_full_is_clear_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(artifact, "atomic_write_bytes", full)
    code = cli.main(["export", "digits", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "disk is full" in err
    assert list(tmp_path.iterdir()) == []


def test_read_only_and_file_in_path(tmp_path, capsys):
    assert cli.main(["export", "digits", "/sys/modelpress-out"]) == 2  # EPERM even for root
    assert "Choose an output folder you can write to" in capsys.readouterr().err
    assert cli.main(["export", "digits", "/proc/modelpress-out"]) == 2
    assert "choose another output path" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["export", "digits", str(blocker / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_runtime_crash_in_child_is_reported_with_what_was_saved(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.RUNTIMES, "crashy", "tests.robustness.crashing_runtime")
    recipe = fast(load_recipe(ROOT / "recipes/baseline.yaml"))
    import dataclasses

    recipe = dataclasses.replace(recipe, runtime=dataclasses.replace(recipe.runtime, backend="crashy"))
    out = tmp_path / "out"
    with pytest.raises(ModelpressError) as e:
        run(recipe, out)
    msg = str(e.value)
    assert "crashed" in msg and "SIGABRT" in msg and str(out) in msg
    saved = json.loads((out / "result.json").read_text())
    assert "SIGABRT" in saved["error"]
    artifact.load(out / "artifact")  # the exported artifact is complete and verifies


def test_cli_reports_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "modelpress", "export", "digits", "/proc/x/y"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "modelpress: error:" in proc.stderr
