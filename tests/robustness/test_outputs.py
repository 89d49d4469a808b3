"""Outputs never destroy user files: ``--force`` replaces only what modelpress made and never a folder
holding the command's inputs; ``-o`` never names an input or a bundle's file; one writer per output."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from modelpress import outdir
from modelpress.cli import main
from modelpress.locks import Lock

from .hostile import ROOT, clean_error, modelpress, snapshot

RECIPE = "task: digits\nbench: {batch_sizes: [1], warmup: 1, rounds: 2, runs_per_round: 2}\n"


def user_folder(path, digits_model):
    """A folder of the user's own files: notes, the recipe to run and the weights to load."""
    path.mkdir()
    (path / "notes.txt").write_text("months of work")
    (path / "r.yaml").write_text(RECIPE)
    torch.save(digits_model.state_dict(), path / "w.pt")
    return path


def test_force_never_deletes_a_users_folder(tmp_path, digits_model, capsys):
    mine = user_folder(tmp_path / "mine", digits_model)
    before = snapshot(mine)
    for argv in (["run", str(mine / "r.yaml"), "-o", str(mine), "--force"],
                 ["export", "digits", str(mine), "--model", str(mine / "w.pt"), "--force"],
                 ["run", str(tmp_path / "elsewhere.yaml"), "-o", str(mine), "--force"]):
        (tmp_path / "elsewhere.yaml").write_text(RECIPE)
        assert main(argv) == 2, argv
        assert snapshot(mine) == before, argv
    err = capsys.readouterr().err
    assert "holds this command's input" in err and "--force replaces only an output modelpress made" in err


def test_force_replaces_only_what_modelpress_made(tmp_path, capsys):
    out = tmp_path / "art"
    assert main(["export", "digits", str(out)]) == 0
    assert (out / outdir.MARKER).is_file()
    assert main(["export", "digits", str(out), "--force"]) == 0  # ours: replaced
    (out / "my-notes.txt").write_text("added by the user")
    assert main(["export", "digits", str(out), "--force"]) == 2
    assert "holds files modelpress did not write (my-notes.txt)" in capsys.readouterr().err
    assert (out / "my-notes.txt").read_text() == "added by the user"


def test_force_never_replaces_a_folder_holding_the_commands_input(tmp_path, capsys):
    out = tmp_path / "art"
    assert main(["export", "digits", str(out)]) == 0
    assert main(["package", str(out), "-o", str(out), "--force"]) == 2  # the input itself
    assert main(["package", str(out), "-o", str(out / "bundle")]) == 2  # inside the input
    err = capsys.readouterr().err
    assert "is this command's input" in err and "lies inside the input folder" in err
    assert sorted(p.name for p in out.iterdir()) == [outdir.MARKER, "manifest.json", "model.onnx"]


@pytest.mark.parametrize("target", ["/", ".", "..", "./"])
def test_root_and_current_folder_are_refused_without_traceback(tmp_path, monkeypatch, target, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "r.yaml").write_text(RECIPE)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    for argv in (["run", "r.yaml", "-o", target, "--force"], ["export", "digits", target, "--force"]):
        assert main(argv) == 2, argv
    assert snapshot(tmp_path) == before
    assert "Traceback" not in capsys.readouterr().err


def test_predict_output_never_replaces_an_input_or_the_bundle(bundle, tmp_path, digits_x, capsys):
    x = tmp_path / "in.npy"
    np.save(x, digits_x)
    bundle_before, x_before = snapshot(bundle), x.read_bytes()
    for target in (x, bundle / "model.onnx", bundle / "new.npy", bundle, bundle / "manifest.json"):
        for force in ([], ["--force"]):
            assert main(["predict", str(bundle), str(x), "-o", str(target), *force]) == 2, target
    assert snapshot(bundle) == bundle_before and x.read_bytes() == x_before
    (tmp_path / "old.npy").write_bytes(b"a previous output")
    assert main(["predict", str(bundle), str(x), "-o", str(tmp_path / "old.npy")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["predict", str(bundle), str(x), "-o", str(tmp_path / "old.npy"), "--force"]) == 0
    assert np.load(tmp_path / "old.npy").shape == (5, 10)
    # the bundle's own runner keeps the same rules
    from .hostile import runner

    for target in (x, bundle / "model.onnx"):
        done = runner(bundle, str(x), "-o", str(target))
        assert done.returncode != 0 and "replace the input or a file of this bundle" in done.stderr
    assert snapshot(bundle) == bundle_before and x.read_bytes() == x_before


def test_one_writer_per_output(tmp_path, capsys):
    out = tmp_path / "art{0}"  # braces: the message is no format string
    with Lock(tmp_path / ".art{0}.lock", "busy"):  # another process would hold this while writing
        assert main(["export", "digits", str(out)]) == 2
    assert f"Another modelpress command (pid {os.getpid()}) is writing {out}" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", "digits", str(out)]) == 0  # the lock is free again


def test_two_runs_into_one_folder_at_once(tmp_path):
    """The second run fails clearly while the first is writing; the first completes untouched."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "modelpress", "run", str(recipe), "-o", str(out)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.partial-*")), "the first run never started writing"
    os.kill(first.pid, signal.SIGSTOP)  # a slow writer: paused while it holds the output
    try:
        second = modelpress("run", str(recipe), "-o", str(out))
        forced = modelpress("run", str(recipe), "-o", str(out), "--force")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    clean_error(second, f"(pid {first.pid}) is writing {out}")
    clean_error(forced, f"(pid {first.pid}) is writing {out}")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    from modelpress import artifact

    artifact.load(out / "artifact")


def test_a_killed_writer_leaves_no_stuck_lock(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "modelpress", "run", str(recipe), "-o", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.partial-*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["run", str(recipe), "-o", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.yaml"]  # no staging folder, no lock file


def test_zip_bundles_replace_only_modelpress_zips(exported, tmp_path, capsys):
    mine = tmp_path / "mine.zip"
    import zipfile

    with zipfile.ZipFile(mine, "w") as z:
        z.writestr("photos.txt", "the user's archive")
    before = mine.read_bytes()
    assert main(["package", str(exported), "-o", str(mine), "--force"]) == 2
    assert "is a zip file modelpress did not write" in capsys.readouterr().err and mine.read_bytes() == before
    ours = tmp_path / "b.zip"
    assert main(["package", str(exported), "-o", str(ours)]) == 0
    assert outdir.MARKER in zipfile.ZipFile(ours).namelist()
    assert main(["package", str(exported), "-o", str(ours), "--force"]) == 0
    assert main(["package", str(exported), "-o", str(tmp_path / "b.zip" / "x.zip")]) == 2  # a file in the path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.zip", "mine.zip"]


def test_auto_never_writes_into_the_folder_holding_its_recipe(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("task: digits\nsearch: {trials: 1}\n")
    assert main(["auto", str(tmp_path / "r.yaml"), "-o", str(tmp_path), "--force"]) == 2
    assert "holds this command's input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
