"""benchmarks/real.py's plumbing, cheaply: one cell on the digits task through the same child-process path as the
real matrix (--quick), and how refusals, crashes, dying processes and timeouts are classified and printed."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import real  # noqa: E402
import real_cells  # noqa: E402
from modelpress.errors import ConfigError, ModelpressError  # noqa: E402


def spec_for(model: str, cell: str) -> dict:
    """The spec real.py builds for one cell (--quick, the default ONNX Runtime settings)."""
    args = SimpleNamespace(models=model, cells=cell, quick=True, threads=2, streams=1, spinning=False)
    (spec,) = real.specs(args)
    return spec


def test_matrix_cells_and_batch_sizes():
    names = [c["cell"] for c in real_cells.cells("mobilenet-v2")]
    assert names[:4] == ["fp32 / onnxruntime", "fp32 / openvino", "fp32 / tflite", "fp32 / executorch"]
    assert {"quantize dynamic / onnxruntime", "quantize static / onnxruntime", "prune channel / onnxruntime",
            "lowrank / onnxruntime", "cluster / onnxruntime", "distill / onnxruntime",
            "openvino int8 / openvino"} <= set(names)
    spec = spec_for("minilm", "fp32 / tflite")
    assert spec["bench"]["batch_sizes"] == [1, 16] and spec["export"]["options"]["batch_sizes"] == [1, 16]
    assert spec["runtime"] == {"backend": "tflite", "threads": 2}  # ONNX Runtime's own settings stay off it
    assert spec_for("mobilenet-v2", "quantize static")["runtime"]["streams"] == 1


def test_one_cell_end_to_end(tmp_path):
    rows = real.main(["--models", "digits", "--cells", "fp32 / onnxruntime", "--quick",
                      "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    (row,) = json.loads((tmp_path / "r.json").read_text())
    assert row == json.loads(json.dumps(rows[0], default=str))
    assert row["status"] == "ok", row
    assert row["fidelity"]["agreement"] == 1.0 and row["fidelity"]["top5_overlap"] == 1.0
    assert set(row["latency_ratio"]) == set(row["latency_iqr"]) == {"1", "8"}
    assert row["size_ratio"] == 1.0 and row["latency_vs"] == "fp32 onnxruntime" and row["wall_s"] > 0
    md = (tmp_path / "r.md").read_text()
    assert "| digits | fp32 / onnxruntime | ok | top-1 1.000, top-5 1.000 |" in md
    assert "1 ok, 0 refused, 0 crash, 0 timeout of 1 cells. Wall time of the cells: digits " in md
    real.main(["--render", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == md


def test_refusal_is_named():
    spec = {**spec_for("digits", "prune channel"), "steps": [{"prune": {"ratio": 2}}]}
    row = real_cells.run_cell(spec)
    assert row["status"] == "refused" and row["error_type"] == "ConfigError" and "ratio must be in [0, 1)" in row["error"]
    assert real.outcome(row).startswith("refused (ConfigError): ")


def test_crash_is_reported_with_where(monkeypatch):
    import modelpress

    def boom(recipe, out):
        {}["no such key"]

    monkeypatch.setattr(modelpress, "run", boom, raising=False)
    row = real_cells.run_cell(spec_for("digits", "fp32 / onnxruntime"))
    assert row["status"] == "crash" and row["error_type"] == "KeyError" and row["error"] == "'no such key'"
    assert "test_benchmark_real.py" in row["raised_at"] and "KeyError" in row["traceback"]
    assert real.outcome(row).startswith("**CRASH** KeyError: 'no such key'")


def test_classify():
    assert real_cells.classify(ConfigError("bad"))["status"] == "refused"
    assert real_cells.classify(ModelpressError("no"))["status"] == "refused"
    try:
        raise RuntimeError("first line\nsecond")
    except RuntimeError as e:
        crash = real_cells.classify(e)
    assert crash["status"] == "crash" and crash["error"] == "first line"


def test_dying_process_and_timeout(tmp_path, monkeypatch):
    script = tmp_path / "dies.py"
    script.write_text("import os, time, sys\nif 'hang' in open(sys.argv[1]).read(): time.sleep(60)\nos._exit(3)\n")
    monkeypatch.setattr(real, "CELL_SCRIPT", script)
    spec = spec_for("digits", "fp32 / onnxruntime")
    died = real.run_isolated(spec, 30)
    assert died["status"] == "crash" and died["error_type"] == "process died" and "exit status 3" in died["error"]
    hung = real.run_isolated({**spec, "technique": "hang"}, 1)
    assert hung["status"] == "timeout" and hung["wall_s"] < 10
    assert real.outcome(hung).startswith("**TIMEOUT**")


@pytest.mark.parametrize("fidelity, text", [({"agreement": 0.5, "top5_overlap": 0.75, "cosine": 0.9}, "top-1 0.500, top-5 0.750"),
                                            ({"cosine": 0.99, "nn_agreement": 0.9}, "cos 0.9900, NN 0.900"),
                                            (None, "–")])
def test_fidelity_text(fidelity, text):
    assert real.fidelity_text(fidelity) == text
