"""Weight clustering: k-means, sparsity preservation, cluster-preserving training, bad input."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from modelpress.compress import Storage, cluster
from modelpress.compress._kmeans import INITS, kmeans_1d
from modelpress.train import TrainConfig, fit
from modelpress.config import parse
from modelpress.errors import ConfigError
from modelpress.task import Batches, Task
from modelpress.zoo import LeNet300100, LeNet5


def distinct(t: torch.Tensor) -> int:
    return len(torch.unique(t.detach()))


def mlp_task(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :10].argmax(1)).astype(np.int64)  # a learnable rule
    data = Batches({"x": x}, y, batch_size=64, shuffle=True)
    return Task(name="mlp", build_model=lambda: None, input_names=("x",), output_names=("logits",),
                calib_data=Batches({"x": x[:64]}), val_data=Batches({"x": x}, y), test_data=Batches({"x": x}, y),
                train_data=data, num_classes=10)


def sparsified(model: nn.Module, ratio: float) -> nn.Module:
    """Zero the smallest ``ratio`` of every Linear/Conv weight (a stand-in for pruning)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                t = m.weight.abs().flatten().kthvalue(int(ratio * m.weight.numel())).values
                m.weight[m.weight.abs() <= t] = 0
    return model


# --- k-means -------------------------------------------------------------------------------------

@pytest.mark.parametrize("init", INITS)
def test_kmeans_beats_its_initialisation_and_uses_k_values(init):
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(-0.3, 0.05, 4000), rng.normal(0.2, 0.1, 6000)])
    centroids, labels = kmeans_1d(values, 16, init, seed=3)
    assert len(centroids) == 16 and np.all(np.diff(centroids) > 0)
    assert labels.min() == 0 and labels.max() == 15
    # every value sits at its nearest centroid
    nearest = np.abs(values[:, None] - centroids[None]).argmin(1)
    assert np.array_equal(nearest, labels)
    error = np.mean((values - centroids[labels]) ** 2)
    uniform = np.linspace(values.min(), values.max(), 16)
    assert error < np.mean((values - uniform[np.abs(values[:, None] - uniform).argmin(1)]) ** 2)
    assert error < 1e-3


def test_kmeans_is_exact_when_values_are_few_and_deterministic():
    values = np.array([0.5, -1.0, 0.5, 2.0])
    centroids, labels = kmeans_1d(values, 8)
    assert np.array_equal(centroids[labels], values)
    a = kmeans_1d(np.random.default_rng(0).standard_normal(5000), 32, "kmeans++", seed=7)
    b = kmeans_1d(np.random.default_rng(0).standard_normal(5000), 32, "kmeans++", seed=7)
    assert np.array_equal(a[0], b[0])


def test_linear_init_uses_every_cluster_despite_the_pruning_gap():
    values = np.random.default_rng(0).standard_normal(50000)
    values = values[np.abs(values) > 1.0]  # what magnitude pruning leaves: nothing near zero
    centroids, _ = kmeans_1d(values, 31, "linear")
    assert len(centroids) == 31


# --- the technique -------------------------------------------------------------------------------

@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_every_layer_holds_at_most_k_values_and_input_is_untouched(granularity):
    torch.manual_seed(0)
    model = LeNet5().eval()
    before = copy.deepcopy(model.state_dict())
    applied = cluster.apply(model, cluster.Config(clusters=8, granularity=granularity), None)
    for name in ("features.0", "features.3", "classifier.1", "classifier.3"):
        w = applied.model.get_submodule(name).weight
        if granularity == "layer":
            assert distinct(w) <= 8
        else:
            assert max(distinct(row) for row in w) <= 8 and distinct(w) > 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert applied.storage == Storage("codebook", {"entropy": "huffman"})
    assert applied.facts["cluster_layers"]["classifier.1"]["clusters"] == 8


def test_clustering_at_256_keeps_outputs_close():
    torch.manual_seed(0)
    model = LeNet300100().eval()
    x = torch.randn(32, 1, 28, 28)
    out = cluster.apply(model, cluster.Config(clusters=256), None).model
    with torch.no_grad():
        ref, got = model(x), out(x)
    assert torch.nn.functional.cosine_similarity(ref, got).min() > 0.999


def test_pruned_zeros_stay_zero_and_count_as_a_cluster():
    torch.manual_seed(0)
    model = sparsified(LeNet300100(), 0.9)
    zeros = {n: (p == 0) for n, p in model.named_parameters() if p.dim() == 2}
    out = cluster.apply(model, cluster.Config(clusters=16), None)
    for name, was_zero in zeros.items():
        w = out.model.get_parameter(name)
        assert torch.equal(w == 0, was_zero)  # the same zeros, no new ones
        assert distinct(w) <= 16
    frozen = out.train_hooks[0].layers["net.1.weight"][2]
    assert frozen.sum() == 1  # one fixed zero cluster
    dense = cluster.apply(model, cluster.Config(clusters=16, preserve_sparsity=False), None)
    assert not dense.train_hooks[0].layers["net.1.weight"][2].any()  # zeros are an ordinary, trainable cluster


def test_train_hook_sums_gradients_per_cluster():
    layer = nn.Sequential(nn.Linear(6, 1, bias=False))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[0.0, 1.0, 1.0, 2.0, 2.0, 2.0]]))
    applied = cluster.apply(layer, cluster.Config(clusters=3, encode=False), None)
    assert applied.storage is None  # encode: false asks for no codebook storage
    hook, = applied.train_hooks
    out = applied.model
    out[0].weight.grad = torch.tensor([[5.0, 1.0, 2.0, 1.0, 1.0, 3.0]])
    hook.before_step(out)
    assert out[0].weight.grad.tolist() == [[0.0, 3.0, 3.0, 5.0, 5.0, 5.0]]  # zero cluster gets none


def test_fine_tuning_keeps_clusters_and_zeros_and_survives_deepcopy():
    torch.manual_seed(0)
    task = mlp_task()
    model = sparsified(LeNet300100(), 0.8)
    zero = model.net[1].weight == 0
    out = cluster.apply(model, cluster.Config(clusters=8, epochs=1, lr=1e-3), task)
    assert distinct(out.model.net[1].weight) <= 8 and torch.equal(out.model.net[1].weight == 0, zero)
    before = out.model.net[1].weight.detach().clone()
    later = copy.deepcopy(out)  # as a later 'finetune' step would get it: the model with its train hooks
    fit(later.model, task.train_data, TrainConfig(epochs=2, lr=1e-2), hooks=later.train_hooks)
    later = later.model
    w = later.net[1].weight
    assert not torch.equal(w, before)  # the centroids moved
    assert distinct(w) <= 8 and torch.equal(w == 0, zero)
    for name in ("net.3.weight", "net.5.weight"):
        assert distinct(later.get_parameter(name)) <= 8


def test_layer_clusters_and_include_exclude():
    torch.manual_seed(0)
    config = parse(cluster.Config, {"clusters": 4, "layer_clusters": {"features.*": 16}, "exclude": ["classifier.3"]},
                   "cluster")
    out = cluster.apply(LeNet5(), config, None).model
    assert 4 < distinct(out.features[3].weight) <= 16
    assert distinct(out.classifier[1].weight) <= 4
    assert distinct(out.classifier[3].weight) > 256  # left alone


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, message", [
    ({"clusters": 1}, "clusters must be between 2 and 256"),
    ({"clusters": 257}, "clusters must be between 2 and 256"),
    ({"layer_clusters": {"net.*": 300}}, "between 2 and 256"),
    ({"init": "random"}, "must be one of"),
    ({"granularity": "row"}, "must be one of"),
])
def test_bad_settings_are_clear(settings, message):
    with pytest.raises(ConfigError, match=message):
        parse(cluster.Config, settings, "cluster")


def test_layer_smaller_than_clusters_is_named():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 200))
    with pytest.raises(ConfigError, match=r"Layer '0' has 12 weights, fewer than the 16 clusters.*exclude: \['0'\]"):
        cluster.apply(model, cluster.Config(clusters=16), None)
    with pytest.raises(ConfigError, match="Layer '2' has 3 weights per output channel"):
        cluster.apply(model, cluster.Config(clusters=4, granularity="channel", include=("2",)), None)


def test_include_that_matches_nothing_lists_eligible_layers():
    with pytest.raises(ConfigError, match="'fc.*' matches no clusterable layer.*Eligible layers: net.1, net.3, net.5"):
        cluster.apply(LeNet300100(), cluster.Config(include=("fc.*",)), None)


def test_fine_tuning_without_training_data_is_clear():
    task = mlp_task()
    no_train = Task(**{**task.__dict__, "train_data": None})
    with pytest.raises(Exception, match="no train_data"):
        cluster.apply(LeNet300100(), cluster.Config(epochs=1), no_train)
