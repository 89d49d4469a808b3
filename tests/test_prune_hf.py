"""Channel pruning of a Hugging Face BERT (the minilm task's model family), on a tiny random BertModel
wrapped by the hf-text task: attention heads go whole (the same heads from query, key, value and the
output projection's inputs), FFN neurons keep multiples of round_to, the pruned model exports to ONNX, and
a save_pretrained folder reloads to the same outputs."""
import json

import numpy as np
import pytest

from modelpress.compress import prune
from modelpress.errors import ConfigError

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

WORDS = "the a cat dog sat on mat runs fast slow good bad movie film was is very not and".split()
TEXTS = ["the cat sat on the mat", "a very good movie", "the film was bad", "dog runs fast", "not a good film",
         "the dog was very slow", "a bad movie and a bad film", "cat and dog", "the movie was good",
         "very very slow", "a cat runs", "the mat was bad"]
HEAD = 16  # channels per head: hidden 64 / 4 heads


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A folder with texts.txt and bert/, a tiny random BertModel as save_pretrained writes it."""
    root = tmp_path_factory.mktemp("bert")
    folder = root / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    transformers.BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=128, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(cfg).eval().save_pretrained(str(folder))
    (root / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    return root


def text_task(folder, root):
    from modelpress.tasks.hf_text import task as hf_task

    return hf_task(folder, root / "texts.txt", output="embeddings", max_length=12, calib_samples=4)


@pytest.fixture(scope="module")
def task(root):
    return text_task(root / "bert", root)


def outputs(model, task, n=8):
    x = task.example_inputs(n)
    with torch.no_grad():
        return model(*[torch.from_numpy(x[k]) for k in task.input_names])


def cuts_of(applied):
    (record,) = applied.storage.options["pruning"]
    return {(c["layer"], c.get("axis")): c for c in record["cuts"]}


def test_heads_go_whole_from_query_key_value_and_output(task):
    model = task.build_model()
    applied = prune.apply(model, prune.Config(ratio=0.5, round_to=8), task)
    cuts = cuts_of(applied)
    for i, layer in enumerate(applied.model.model.encoder.layer):
        attn, name = layer.attention.self, f"model.encoder.layer.{i}.attention"
        assert (attn.num_attention_heads, attn.attention_head_size, attn.all_head_size) == (2, HEAD, 2 * HEAD)
        assert attn.query.out_features == attn.key.out_features == attn.value.out_features == 2 * HEAD
        assert layer.attention.output.dense.in_features == 2 * HEAD
        kept = [cuts[(f"{name}.self.{p}", "out")]["kept"] for p in ("query", "key", "value")]
        kept.append(cuts[(f"{name}.output.dense", "in")]["kept"])
        assert all(k == kept[0] for k in kept)  # the same heads everywhere
        heads = sorted({c // HEAD for c in kept[0]})
        assert kept[0] == [h * HEAD + j for h in heads for j in range(HEAD)]  # whole heads, none split
        assert cuts[(f"{name}.self", None)]["set"] == {"num_attention_heads": 2, "all_head_size": 2 * HEAD}
        assert applied.facts["pruned_channels"][f"{name}.self heads"] == [4, 2]
        assert layer.intermediate.dense.out_features == layer.output.dense.in_features == 64  # FFN neurons too
    assert "prune_skipped" not in applied.facts and "prune_heads_uneven" not in applied.facts
    out = outputs(applied.model, task)
    assert out.shape == outputs(model, task).shape == (8, 64) and torch.isfinite(out).all()


def test_pruned_model_equals_the_original_with_removed_units_silenced(task):
    """Removing a head or an FFN neuron (no re-fit) is the same as zeroing its columns in the next layer's input:
    checks that heads stay whole and aligned end to end (a split head would change the attention)."""
    model = task.build_model()
    applied = prune.apply(model, prune.Config(ratio=0.5, round_to=8, refit=False), task)
    silenced = task.build_model()
    with torch.no_grad():
        for (layer, axis), c in cuts_of(applied).items():
            if axis == "in":
                gone = sorted(set(range(c["size"])) - set(c["kept"]))
                silenced.get_submodule(layer).weight[:, gone] = 0
    torch.testing.assert_close(outputs(applied.model, task), outputs(silenced, task), atol=1e-5, rtol=1e-4)


def test_ffn_neurons_keep_multiples_of_round_to_and_include_picks_heads_or_neurons(task):
    model = task.build_model()
    ffn = prune.apply(model, prune.Config(ratio=0.3, round_to=8, include=("*.intermediate.dense",)), task).model
    for layer in ffn.model.encoder.layer:
        assert layer.intermediate.dense.out_features == 88 == layer.output.dense.in_features  # 128 - 38 -> 88
        assert layer.attention.self.num_attention_heads == 4 and layer.attention.self.query.out_features == 64
    heads = prune.apply(model, prune.Config(ratio=0.3, round_to=8, include=("*.attention.self",)), task).model
    for layer in heads.model.encoder.layer:
        assert layer.attention.self.num_attention_heads == 3  # heads are never rounded: 4 - round(1.2)
        assert layer.intermediate.dense.out_features == 128


def test_onnx_export_of_the_pruned_model_matches_torch(task, tmp_path):
    from modelpress.export import onnx as onnx_export
    from modelpress.runtime import RuntimeConfig, open_session

    applied = prune.apply(task.build_model(), prune.Config(ratio=0.5, round_to=8), task)
    art = onnx_export.export(applied.model, task, tmp_path)
    got = open_session(art, RuntimeConfig(threads=1)).run(task.example_inputs(8))[0]
    np.testing.assert_allclose(got, outputs(applied.model, task).numpy(), atol=1e-4)


@pytest.mark.parametrize("settings", [{}, {"exclude": ("model.encoder.layer.1.attention",)}])
def test_save_pretrained_folder_reloads_to_the_same_outputs(task, root, tmp_path, settings):
    applied = prune.apply(task.build_model(), prune.Config(ratio=0.5, round_to=8, **settings), task)
    bert = applied.model.model
    bert.save_pretrained(str(tmp_path / "pruned"))
    saved = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert saved["num_attention_heads"] == 4 and saved["modelpress_pruning"][0]["version"] == 1  # original + cuts
    assert applied.facts["prune_hf_record"] == {"model": "modelpress_pruning"}
    if settings:  # layer 1 keeps its 4 heads: one config value could not say so, the record does
        assert applied.facts["prune_heads_uneven"] == {"model.encoder.layer.0.attention.self": 2,
                                                       "model.encoder.layer.1.attention.self": 4}
    reloaded = prune.from_pretrained(tmp_path / "pruned", attn_implementation="eager")
    assert reloaded.encoder.layer[0].attention.self.num_attention_heads == 2
    x = task.example_inputs(8)
    with torch.no_grad():
        want = bert(**{k: torch.from_numpy(v) for k, v in x.items()}).last_hidden_state
        got = reloaded(**{k: torch.from_numpy(v) for k, v in x.items()}).last_hidden_state
    torch.testing.assert_close(got, want)
    with pytest.raises(Exception, match="mismatch"):  # plain transformers refuses rather than loading wrong weights
        transformers.AutoModel.from_pretrained(str(tmp_path / "pruned"))
    # the hf-text task reads a pruned folder too (the tokenizer copied next to it)
    for f in ("vocab.txt", "tokenizer_config.json"):
        (tmp_path / "pruned" / f).write_bytes((root / "bert" / f).read_bytes())
    again = text_task(tmp_path / "pruned", root).build_model()
    torch.testing.assert_close(outputs(again, task), outputs(applied.model, task))


def test_a_ratio_that_removes_every_head_is_refused(task):
    with pytest.raises(ConfigError, match=r"every head of 'model\.encoder\.layer\.\d\.attention\.self'.*exclude"):
        prune.apply(task.build_model(), prune.Config(ratio=0.9, round_to=8), task)


def test_heads_whose_projections_fall_in_two_groups_are_left_whole():
    """Torch-Pruning couples query, key and value through the attention matmuls; were query in a group of its
    own, its group and the key/value group would lose different units: both are left whole and named."""
    from torch import nn

    from modelpress.compress._graph import Graph, Group

    class Attention(nn.Module):
        def __init__(self, dim=16, heads=2):
            super().__init__()
            self.num_attention_heads, self.attention_head_size, self.all_head_size = heads, dim // heads, dim
            self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = (p(x).view(n, t, -1, self.attention_head_size).transpose(1, 2) for p in (self.query, self.key, self.value))
            return (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).transpose(1, 2).reshape(n, t, -1)

    model = nn.Sequential(nn.Linear(4, 16), Attention(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    graph = Graph(model, (torch.randn(2, 5, 4),))
    (head,) = [g for g in graph.groups if g.heads_of == "1"]
    assert head.unit == 8 and {m.name for m in head.members} == {"1.query", "1.key", "1.value", "2"}
    assert head.root == "1.value"
    query = next(m for m in head.members if m.name == "1.query")  # as if the graph had not coupled query
    head.members.remove(query)
    graph.groups.append(Group(root="1.query", size=16, members=[query]))
    graph._split_heads()
    assert not any(g.root in ("1.query", "1.value") for g in graph.groups)
    for root in ("1.query", "1.value"):
        assert "fall in 2 groups" in graph.skipped[root] and "exclude: ['1']" in graph.skipped[root]
