"""Fixtures of the robustness tests: one exported digits artifact and one bundle made from it, built once
per session; tests tamper with copies."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory, digits_task, digits_model):
    """An ONNX artifact folder of the digits model, as 'modelpress export' writes it."""
    from modelpress.export import onnx as onnx_export

    folder = tmp_path_factory.mktemp("exported") / "art"
    onnx_export.export(digits_model, digits_task, folder)
    return folder


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, exported):
    """A bundle folder of ``exported`` (onnxruntime), as 'modelpress package' writes it."""
    from modelpress.cli import main

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    assert main(["package", str(exported), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def digits_x(digits_task):
    return digits_task.example_inputs(5)["x"]
