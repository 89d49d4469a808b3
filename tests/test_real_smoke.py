"""One real pretrained model end to end, as a new user runs it: load MobileNetV2 (ImageNet weights), export to
ONNX, one int8 candidate on ONNX Runtime, fidelity to fp32 and parity per output. A collapsed artifact must be
flagged (the default fidelity floor), never reported as meeting its constraints."""
from __future__ import annotations

import json

import pytest

from modelpress.constraints import MIN_FIDELITY
from modelpress.recipe import parse_recipe

pytest.importorskip("skimage", reason="the reference photos come from scikit-image (pip install 'modelpress[reference]')")


def test_mobilenet_v2_static_int8_end_to_end(tmp_path):
    from modelpress.pipeline import run

    recipe = parse_recipe({"task": "mobilenet-v2", "steps": [{"quantize": {"mode": "static", "calib_samples": 32}}],
                           "bench": {"batch_sizes": [1], "warmup": 1, "rounds": 2, "runs_per_round": 2}})
    result = run(recipe, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert written["task"] == "mobilenet-v2" and written["error"] is None
    fidelity, parity = result.fidelity["logits"], result.parity["logits"]
    assert fidelity["samples"] > 100 and parity["samples"] == fidelity["samples"]
    for comparison in (fidelity, parity):
        assert 0.0 <= comparison["agreement"] <= 1.0 and 0.0 <= comparison["top5_overlap"] <= 1.0
    assert result.score == pytest.approx(fidelity["agreement"])  # the task's score is top-1 agreement with fp32
    assert written["int8_ops"], "the artifact holds no int8 op"
    if fidelity["agreement"] < MIN_FIDELITY:  # honest either way: a collapse is a missed constraint and a note
        assert not result.constraints_met and any("min_fidelity" in v for v in result.violations)
        assert any(n.startswith("Fidelity collapsed") for n in result.notes)
    else:
        assert not any("min_fidelity" in v for v in result.violations)
