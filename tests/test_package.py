"""Deployment bundles: ``modelpress package`` and ``modelpress predict``, and the bundled runner."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelpress.cli import main
from modelpress.evaluate import torch_predict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory, digits_task):
    from modelpress.pipeline import run
    from modelpress.recipe import load_recipe
    from tests.conftest import fast

    out = tmp_path_factory.mktemp("runs") / "baseline"
    run(fast(load_recipe(ROOT / "recipes/baseline.yaml")), out)
    return out


def runner(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The bundle's predict.py in an isolated interpreter (no PYTHONPATH, no current-folder imports)."""
    return subprocess.run([sys.executable, "-I", str(bundle / "predict.py"), *args], capture_output=True, text=True,
                          cwd=bundle, timeout=300)


def test_package_folder_then_predict_with_modelpress_and_with_the_runner(onnx_run, digits_task, digits_model,
                                                                         tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["package", str(onnx_run), "-o", str(bundle)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == [".modelpress-output", "README.md", "manifest.json", "model.onnx",
                                                        "predict.py", "preprocessing.json", "requirements.txt"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["backend"] == "onnxruntime" and manifest["measured"]["score"] is not None
    assert json.loads((bundle / "preprocessing.json").read_text())["inputs"]["x"]["shape"] == ["batch", 1, 8, 8]
    runner_text = (bundle / "predict.py").read_text()  # the runner needs only numpy + the runtime
    assert not re.search(r"^\s*(import|from)\s+modelpress", runner_text, re.M) and "modelpress." not in runner_text
    assert (bundle / "requirements.txt").read_text().split() == ["numpy", "onnxruntime"]

    x = digits_task.example_inputs(7)["x"]
    np.save(tmp_path / "x.npy", x)
    want = torch_predict(digits_model, digits_task)({"x": x})[0]
    assert main(["predict", str(bundle), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]) == 0
    assert "logits: shape [7, 10]" in capsys.readouterr().out
    assert np.abs(np.load(tmp_path / "y.npy") - want).max() <= 1e-4

    done = runner(bundle, str(tmp_path / "x.npy"), "-o", str(tmp_path / "y2.npy"))
    assert done.returncode == 0, done.stderr
    assert np.abs(np.load(tmp_path / "y2.npy") - want).max() <= 1e-4


def test_zip_bundle_predicts_the_same(onnx_run, digits_task, tmp_path):
    assert main(["package", str(onnx_run), "--zip", "-o", str(tmp_path / "b.zip")]) == 0
    assert main(["package", str(onnx_run), "--zip", "-o", str(tmp_path / "b.zip")]) == 2  # exists: needs --force
    x = digits_task.example_inputs(3)["x"]
    np.savez(tmp_path / "x.npz", x=x)
    assert main(["predict", str(tmp_path / "b.zip"), str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz")]) == 0
    assert np.load(tmp_path / "y.npz")["logits"].shape == (3, 10)


def test_tflite_bundle_runner_splits_odd_batches(digits_task, digits_model, tmp_path):
    pytest.importorskip("litert_torch")
    from modelpress.export import tflite

    run = tmp_path / "run"
    tflite.export(digits_model, digits_task, run / "artifact", tflite.Config(batch_sizes=(1, 4)))
    (run / "recipe.yaml").write_text(yaml.safe_dump({"task": "digits", "runtime": {"backend": "tflite", "threads": 1}}))
    assert main(["package", str(run), "-o", str(tmp_path / "bundle")]) == 0
    x = digits_task.example_inputs(11)["x"]  # 4 + 4 + 3 (padded to 4)
    np.save(tmp_path / "x.npy", x)
    done = runner(tmp_path / "bundle", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert done.returncode == 0, done.stderr
    assert np.abs(np.load(tmp_path / "y.npy") - torch_predict(digits_model, digits_task)({"x": x})[0]).max() <= 1e-4


def test_predict_and_package_bad_input(onnx_run, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert main(["package", str(onnx_run), "-o", str(bundle)]) == 0
    cases = [("one_sample.npy", np.zeros((1, 8, 8), np.float32), "add a leading batch axis"),
             ("wide.npy", np.zeros((2, 1, 9, 8), np.float32), "shape [2, 1, 9, 8]"),
             ("f64.npy", np.zeros((2, 1, 8, 8), np.float64), "dtype float64"),
             ("names.npz", {"image": np.zeros((2, 1, 8, 8), np.float32)}, "expects exactly ['x']"),
             ("pickled.npy", np.array([{"a": 1}], dtype=object), "would need unpickling")]
    for name, value, needle in cases:
        path = tmp_path / name
        if isinstance(value, dict):
            np.savez(path, **value)
        else:
            np.save(path, value, allow_pickle=True)
        capsys.readouterr()
        assert main(["predict", str(bundle), str(path)]) == 2
        assert needle in capsys.readouterr().err, name
    done = runner(bundle, str(tmp_path / "wide.npy"))
    assert done.returncode != 0 and "expects ['batch', 1, 8, 8]" in done.stderr
    assert main(["package", str(onnx_run), "-o", str(tmp_path / "b2"), "--runtime", "tflite"]) == 2
    assert "runs tflite artifacts, not this bundle's 'onnx'" in capsys.readouterr().err
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    (damaged / "model.onnx").write_bytes(b"garbage")
    assert main(["predict", str(damaged), str(tmp_path / "f64.npy")]) == 2
    assert "does not match the hash" in capsys.readouterr().err
