"""Clustering through the pipeline: the example recipes run end to end on digits, the stored artifact
is the encoded graph + weights, and the result reports bits per weight per layer."""
from pathlib import Path

import pytest

from modelpress.pipeline import run
from modelpress.recipe import load_recipe

from .conftest import fast

ROOT = Path(__file__).resolve().parents[1]


def test_cluster_recipe_shrinks_the_artifact_and_keeps_the_score(tmp_path):
    result = run(fast(load_recipe(ROOT / "recipes/cluster_digits.yaml")), tmp_path / "run")
    assert result.error is None and result.score_drop <= 0.02
    assert result.parity["logits"]["agreement"] >= 0.98
    stored = sorted(p.name for p in (tmp_path / "run/artifact").iterdir())
    assert stored == ["graph.onnx", "manifest.json", "weights.mpcb"]
    assert result.size_ratio < 0.16  # 4-bit indices (Huffman-coded) instead of 32-bit floats
    fc = result.facts["storage_layers"]["classifier.1.weight"]
    assert fc["clusters"] <= 16 and fc["bits_per_weight"] <= 4.2
    assert result.facts["cluster_layers"]["classifier.1"]["clusters"] <= 16


def test_deep_compression_recipe_keeps_zeros_and_clusters_to_the_stored_file(tmp_path):
    pytest.importorskip("modelpress.compress.prune")
    result = run(fast(load_recipe(ROOT / "recipes/deep_compression.yaml")), tmp_path / "run")
    assert result.error is None and result.score_drop <= 0.03
    layers = result.facts["storage_layers"]
    fc = layers["classifier.1.weight"]
    assert fc["sparsity"] >= 0.8 and fc["clusters"] <= 32 and fc["layout"] == "sparse"
    assert result.size_ratio < 0.07
    assert result.facts["storage_bits_per_weight"] < 2.5
