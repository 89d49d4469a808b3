"""Embedding tables in the int8 modes: int8 rows with one scale each, gathered as int8 in the exported graph."""
import numpy as np
import onnx
import pytest
import torch

from modelpress.compress import quantize
from modelpress.compress._quant.embeddings import rows_on_grid
from modelpress.config import parse
from modelpress.pipeline import export_model
from modelpress.recipe import parse_recipe
from modelpress.runtime import open_session
from modelpress.task import Batches, Task


class Bag(torch.nn.Module):
    """Token ids [B, T] -> logits: a word table, a position table, a Linear head."""

    def __init__(self):
        super().__init__()
        self.words = torch.nn.Embedding(500, 32)
        self.positions = torch.nn.Embedding(6, 32)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, ids):
        h = self.words(ids) + self.positions(torch.arange(ids.shape[1]))
        return self.head(torch.tanh(h).mean(1))


@pytest.fixture(scope="module")
def bag():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 500, (96, 6)).astype(np.int64)
    y = rng.integers(0, 10, 96)
    task = Task(name="ids", build_model=lambda: None, input_names=("ids",), output_names=("logits",),
                calib_data=Batches({"ids": ids[:32]}, batch_size=16),
                val_data=Batches({"ids": ids[32:64]}, y[32:64], batch_size=32),
                test_data=Batches({"ids": ids[64:]}, y[64:], batch_size=32), num_classes=10)
    return Bag().eval(), task


def _export(model, task, cfg, folder):
    q = quantize.apply(model, parse(quantize.Config, cfg, "quantize"), task)
    recipe = parse_recipe({"task": "digits", "steps": [{"quantize": cfg}], "export": {"format": "onnx"}})
    return q, export_model(q, task, recipe, folder)


@pytest.mark.parametrize("mode", ["static", "dynamic", "weight_only"])
def test_tables_are_gathered_as_int8_and_match_torch(bag, tmp_path, mode):
    model, task = bag
    q, art = _export(model, task, {"mode": mode}, tmp_path / mode)
    _, plain = _export(model, task, {"mode": mode, "embeddings": False}, tmp_path / "plain")
    assert q.facts["embedding_bits"] == {"positions": 8, "words": 8}
    proto = onnx.load(str(art.runnable_path()))
    tables = [i for i in proto.graph.initializer if list(i.dims) in ([500, 32], [6, 32])]
    assert sorted(onnx.TensorProto.DataType.Name(t.data_type) for t in tables) == ["INT8", "INT8"]
    assert art.size_bytes < 0.45 * plain.size_bytes  # the word table dominates: float32 -> int8
    x = task.example_inputs(8)
    out = open_session(art).run(x)[0]
    ref = q.model(torch.from_numpy(x["ids"])).detach().numpy()
    assert np.abs(out - ref).max() <= 3e-2 * np.abs(ref).max()  # the head's int8 activations; tables exact below
    rounded = q.model.words.weight.detach().numpy()
    original = model.words.weight.detach().numpy()
    assert 0 < np.abs(rounded - original).max() <= np.abs(original).max(1).max() / 127  # at most one step
    assert rows_on_grid(original) is None and rows_on_grid(rounded) is not None


def test_embeddings_false_and_exclude_keep_tables_float(bag, tmp_path):
    model, task = bag
    q, _ = _export(model, task, {"mode": "static", "exclude": ["words"]}, tmp_path / "ex")
    assert q.facts["embedding_bits"] == {"positions": 8}
    assert torch.equal(q.model.words.weight, model.words.weight)
    q, _ = _export(model, task, {"mode": "static", "embeddings": False}, tmp_path / "off")
    assert "embedding_bits" not in q.facts and torch.equal(q.model.positions.weight, model.positions.weight)


def test_the_gather_rewrite_is_exact(bag):
    import onnxruntime as ort

    from modelpress.compress._quant.embeddings import GatherLowering
    from modelpress.export.onnx import to_onnx

    model, task = bag
    q = quantize.apply(model, parse(quantize.Config, {"mode": "dynamic"}, "quantize"), task)
    before = to_onnx(q.model, task)
    after, facts = GatherLowering()(onnx.load_from_string(before.SerializeToString()), task)
    assert sorted(facts["int8_embeddings"].values()) == ["500 x 32", "6 x 32"]
    x = task.example_inputs(8)
    run = lambda proto: ort.InferenceSession(proto.SerializeToString()).run(None, x)[0]  # noqa: E731
    assert np.abs(run(after) - run(before)).max() <= 1e-6


def test_a_table_tied_to_a_quantized_layer_keeps_the_layer_grid(bag):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.words = torch.nn.Embedding(500, 32)
            self.out = torch.nn.Linear(32, 500, bias=False)
            self.out.weight = self.words.weight  # tied, as language-model heads are

        def forward(self, ids):
            return self.out(self.words(ids).mean(1))[:, :10]

    _, task = bag
    torch.manual_seed(0)
    q = quantize.apply(Tied().eval(), parse(quantize.Config, {"mode": "weight_only", "bits": 4}, "quantize"), task)
    assert "embedding_bits" not in q.facts and q.facts["layer_bits"] == {"out": 4}
    assert q.model.words.weight is q.model.out.weight
