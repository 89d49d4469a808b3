import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "modelpress", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=600)


def assert_clean_error(proc, needle):
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_tasks_lists_builtins():
    proc = cli("tasks")
    assert proc.returncode == 0 and "digits" in proc.stdout and "fashion-mnist:lenet5" in proc.stdout


def test_doctor_shows_runtimes_and_isa():
    proc = cli("doctor")
    assert proc.returncode == 0
    assert "onnxruntime" in proc.stdout and "avx512_vnni=" in proc.stdout and "amx_int8=" in proc.stdout


def test_bad_recipe_key(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: digits\nexprot: {format: onnx}\n")
    assert_clean_error(cli("run", str(recipe), "-o", str(tmp_path / "out")), "Did you mean 'export'")
    assert not (tmp_path / "out").exists()


def test_unknown_task_and_missing_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: digitz\n")
    assert_clean_error(cli("run", str(recipe), "-o", str(tmp_path / "out")), "Unknown task 'digitz'")
    assert_clean_error(cli("run", str(tmp_path / "missing.yaml")), "does not exist")


def test_run_and_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_clean_error(cli("run", "recipes/baseline.yaml", "-o", str(out)), "already exists")
    assert (out / "keep.txt").read_text() == "mine"


def test_export_and_bench(tmp_path):
    proc = cli("export", "digits", str(tmp_path / "art"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "art/model.onnx").exists()
    proc = cli("bench", str(tmp_path / "art"), "--compare", "digits", "--rounds", "2", "--batch-sizes", "1,2")
    assert proc.returncode == 0, proc.stderr
    assert "ratio to --compare" in proc.stdout


def test_pickled_model_refused_unless_trusted(tmp_path, digits_model):
    whole = tmp_path / "whole.pt"
    torch.save(digits_model, whole)
    before = whole.read_bytes()
    assert_clean_error(cli("export", "digits", str(tmp_path / "a"), "--model", str(whole)), "--trust-pickle")
    assert whole.read_bytes() == before
    proc = cli("export", "digits", str(tmp_path / "b"), "--model", str(whole), "--trust-pickle")
    assert proc.returncode == 0, proc.stderr


def test_state_dict_and_truncated_files(tmp_path, digits_model):
    from safetensors.torch import save_file

    sd = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in digits_model.state_dict().items()}, str(sd))
    assert cli("export", "digits", str(tmp_path / "a"), "--model", str(sd)).returncode == 0
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(sd.read_bytes()[:1000])
    assert_clean_error(cli("export", "digits", str(tmp_path / "b"), "--model", str(cut)), "truncated")
    pt = tmp_path / "w.pt"
    torch.save(digits_model.state_dict(), pt)
    assert cli("export", "digits", str(tmp_path / "c"), "--model", str(pt)).returncode == 0
    cut_pt = tmp_path / "cut.pt"
    cut_pt.write_bytes(pt.read_bytes()[:500])
    assert_clean_error(cli("export", "digits", str(tmp_path / "d"), "--model", str(cut_pt)), "not a readable torch file")


def test_import_is_light():
    code = ("import sys, modelpress, modelpress.registry, modelpress.recipe, modelpress.pipeline;"
            "heavy = [m for m in ('onnxruntime', 'openvino', 'tensorrt', 'executorch', 'ai_edge_litert', 'ray', 'optuna')"
            " if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
