"""Paths read from a manifest, a bundle or a zip stay inside their root; every file is listed and hashed.

A tampered manifest may name '../../payload.txt', an absolute path or a link out of the folder; 'package'
must then write nothing outside its output and 'predict' (and the bundle's own predict.py) must load
nothing from outside the bundle. Each case checks the files around the folder are byte-identical after."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelpress import artifact
from modelpress.cli import main
from modelpress.errors import ModelFileError

from .hostile import copy, edit_manifest, runner, snapshot

ESCAPES = ["../../payload.txt", "../payload.txt", "/tmp/modelpress-hostile-payload.txt", "a/../../payload.txt",
           "./model.onnx", "", "sub/../model.onnx"]


@pytest.fixture
def arena(tmp_path):
    """tmp/outer/work: the folders tests use live in work/; outer/ holds a bystander file to protect."""
    work = tmp_path / "outer" / "work"
    work.mkdir(parents=True)
    (tmp_path / "outer" / "payload.txt").write_text("the user's own file")
    (tmp_path / "payload.txt").write_text("another user file")
    return work


@pytest.mark.parametrize("name", ESCAPES)
def test_package_never_writes_outside_its_output(exported, arena, name, capsys):
    art = copy(exported, arena / "art")
    files = json.loads((art / "manifest.json").read_text())["files"]
    edit_manifest(art, files={**files, name: "0" * 64})
    before = snapshot(arena.parents[1])
    assert main(["package", str(art), "-o", str(arena / "bundle")]) == 2
    assert "not a plain path inside its folder" in capsys.readouterr().err
    assert snapshot(arena.parents[1]) == before and not (arena / "bundle").exists()
    assert not os.path.exists("/tmp/modelpress-hostile-payload.txt")


@pytest.mark.parametrize("name", ["../../payload.txt", "/tmp/modelpress-hostile-model.onnx", "../model.onnx"])
def test_predict_never_loads_a_model_from_outside_the_bundle(bundle, arena, digits_x, name, capsys):
    """The outside file is a valid model whose hash the manifest records: only the confinement refuses it."""
    b = copy(bundle, arena / "bundle")
    target = Path(name) if name.startswith("/") else (b / name).resolve()
    target.write_bytes((b / "model.onnx").read_bytes())
    try:
        digest = artifact.sha256(target)
        edit_manifest(b, file=name, files={name: digest})
        np.save(arena / "x.npy", digits_x)
        assert main(["predict", str(b), str(arena / "x.npy")]) == 2
        assert "refusing it" in capsys.readouterr().err
        done = runner(b, str(arena / "x.npy"))
        assert done.returncode != 0 and "not a file inside this bundle" in done.stderr
    finally:
        target.unlink()


def test_a_link_out_of_the_bundle_is_refused(bundle, arena, digits_x, capsys):
    b = copy(bundle, arena / "bundle")
    real = arena / "elsewhere.onnx"
    (b / "model.onnx").rename(real)
    (b / "model.onnx").symlink_to(real)
    np.save(arena / "x.npy", digits_x)
    assert main(["predict", str(b), str(arena / "x.npy")]) == 2
    assert "is a link or leads outside" in capsys.readouterr().err
    assert runner(b, str(arena / "x.npy")).returncode != 0


def _zip(folder, path, extra=()):
    with zipfile.ZipFile(path, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, p.name)
        for name, data in extra:
            z.writestr(name, data)


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/modelpress-hostile-evil.txt", "a/../../evil.txt"])
def test_zip_bundle_members_outside_are_refused(bundle, arena, digits_x, member, capsys):
    _zip(bundle, arena / "b.zip", [(member, b"evil")])
    np.save(arena / "x.npy", digits_x)
    before = snapshot(arena.parents[1])
    assert main(["predict", str(arena / "b.zip"), str(arena / "x.npy")]) == 2
    assert "unsafe path" in capsys.readouterr().err
    assert snapshot(arena.parents[1]) == before and not os.path.exists("/tmp/modelpress-hostile-evil.txt")


def test_zip_bundle_manifest_pointing_outside_is_refused(bundle, arena, digits_x, capsys):
    b = copy(bundle, arena / "b")
    edit_manifest(b, file="../../payload.txt", files={"../../payload.txt": "0" * 64})
    _zip(b, arena / "b.zip")
    np.save(arena / "x.npy", digits_x)
    assert main(["predict", str(arena / "b.zip"), str(arena / "x.npy")]) == 2
    assert "not a plain path inside its folder" in capsys.readouterr().err


def test_empty_files_and_unlisted_files_are_refused(bundle, arena, digits_x, capsys):
    np.save(arena / "x.npy", digits_x)
    empty = copy(bundle, arena / "empty")
    edit_manifest(empty, files={})
    with open(empty / "model.onnx", "r+b") as f:  # an edited model that nothing would check
        f.seek(100)
        f.write(b"\x00")
    assert main(["predict", str(empty), str(arena / "x.npy")]) == 2
    assert "not listed in 'files' with its hash" in capsys.readouterr().err
    extra = copy(bundle, arena / "extra")
    (extra / "notes.onnx").write_bytes(b"x")
    assert main(["predict", str(extra), str(arena / "x.npy")]) == 2
    assert "does not list (notes.onnx)" in capsys.readouterr().err
    assert "not part of this bundle" in runner(extra, str(arena / "x.npy")).stderr
    with pytest.raises(ModelFileError, match="not listed"):
        artifact.load(empty)


def test_the_bundle_runner_checks_every_hash(bundle, arena, digits_x):
    np.save(arena / "x.npy", digits_x)
    assert runner(bundle, str(arena / "x.npy")).returncode == 0
    for name in ("model.onnx", "README.md", "preprocessing.json"):
        b = copy(bundle, arena / f"flip-{name}")
        data = bytearray((b / name).read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit
        (b / name).write_bytes(bytes(data))
        done = runner(b, str(arena / "x.npy"))
        assert done.returncode != 0 and f"{name} does not match its sha256" in done.stderr, done.stderr
    gone = copy(bundle, arena / "gone")
    (gone / "model.onnx").unlink()
    assert "missing" in runner(gone, str(arena / "x.npy")).stderr


def test_artifact_files_named_like_the_manifest_are_refused(exported, arena):
    art = copy(exported, arena / "art")
    files = json.loads((art / "manifest.json").read_text())["files"]
    edit_manifest(art, files={**files, "manifest.json": artifact.sha256(art / "model.onnx")})
    with pytest.raises(ModelFileError):
        artifact.load(art)
