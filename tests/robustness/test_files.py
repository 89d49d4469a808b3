"""Truncated or random-byte model files (ONNX, safetensors, torch, modelpress artifacts) all give a
clear ModelFileError, never another exception, and are never modified."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpress import artifact
from modelpress.errors import ModelFileError
from modelpress.export import onnx as onnx_export
from modelpress.load import load_into, load_state
from modelpress.runtime import open_session

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits_task, digits_model):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("files")
    art = onnx_export.export(digits_model, digits_task, root / "art")
    save_file({k: v.contiguous() for k, v in digits_model.state_dict().items()}, str(root / "w.safetensors"))
    torch.save(digits_model.state_dict(), root / "w.pt")
    return {"onnx": art.path.read_bytes(), "safetensors": (root / "w.safetensors").read_bytes(),
            "pt": (root / "w.pt").read_bytes(), "art": art.folder}


def damaged(original: bytes):
    """Truncations, random bytes, and single-byte flips of a real file."""
    cut = st.integers(0, len(original) - 1).map(lambda n: original[:n])
    noise = st.binary(min_size=0, max_size=2048)
    flip = st.tuples(st.integers(0, len(original) - 1), st.integers(1, 255)).map(
        lambda t: original[:t[0]] + bytes([original[t[0]] ^ t[1]]) + original[t[0] + 1:])
    return st.one_of(cut, noise, flip)


def check_onnx(path: Path) -> None:
    onnx_export.check_model(path)


@pytest.mark.parametrize("kind", ["onnx", "safetensors", "pt"])
def test_damaged_model_files(kind, files, tmp_path_factory, digits_model):
    folder = tmp_path_factory.mktemp(kind)

    @SETTINGS
    @given(damaged(files[kind]))
    def check(payload):
        path = folder / f"model.{kind}"
        path.write_bytes(payload)
        try:
            if kind == "onnx":
                check_onnx(path)
            else:
                load_into(digits_model.__class__(), path)
        except ModelFileError as e:
            assert str(e)
        assert path.read_bytes() == payload  # never modified

    check()


def test_damaged_artifacts(files, tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifacts")
    original_manifest = (files["art"] / "manifest.json").read_bytes()

    @SETTINGS
    @given(damaged(files["onnx"]), damaged(original_manifest) | st.just(original_manifest))
    def check(model_bytes, manifest_bytes):
        target = folder / "a"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        (target / "model.onnx").write_bytes(model_bytes)
        (target / "manifest.json").write_bytes(manifest_bytes)
        try:
            open_session(artifact.load(target))
        except ModelFileError as e:
            assert str(e)
        else:  # only an intact model with a manifest that still describes it may load
            assert model_bytes == files["onnx"]

    check()


def test_pickle_refused_even_when_damaged(tmp_path, digits_model):
    path = tmp_path / "whole.pt"
    torch.save(digits_model, path)
    with pytest.raises(ModelFileError, match="trust-pickle"):
        load_state(path)
