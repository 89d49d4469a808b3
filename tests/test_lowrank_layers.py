"""Low-rank mechanics: the split layers compute exactly the rank-limited approximation, really have
fewer parameters, and reproduce the layer at full rank."""
import pytest
import torch
from torch import nn

from modelpress.compress._lowrank_cost import Geometry, macs, params
from modelpress.compress._lowrank_layers import approximation, bases, spec_of, split, tucker2

CASES = [
    (lambda: nn.Linear(20, 12), "svd", (12,), (20,)),
    (lambda: nn.Linear(20, 12, bias=False), "svd", (5,), (3, 20)),
    (lambda: nn.Conv2d(6, 10, 1, stride=2), "svd", (4,), (6, 11, 13)),
    (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), "spatial", (7,), (6, 11, 13)),
    (lambda: nn.Conv2d(6, 10, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), "spatial", (4,), (6, 11, 13)),
    (lambda: nn.Conv2d(6, 10, 3, padding="same"), "tucker2", (4, 8), (6, 11, 13)),
    (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False), "tucker2", (6, 5), (6, 11, 13)),
    (lambda: nn.Conv2d(6, 10, 3), "tucker2", (3, 10), (6, 11, 13)),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("build, method, ranks, shape", CASES)
def test_split_computes_the_approximation(build, method, ranks, shape):
    torch.manual_seed(0)
    layer = build()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        got = split(layer, method, ranks)(x)
        layer.weight.copy_(approximation(layer, method, ranks))
        want = layer(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("build, method, ranks, shape", CASES)
def test_full_rank_split_reproduces_the_layer(build, method, ranks, shape):
    torch.manual_seed(0)
    layer = build()
    full = spec_of(layer).max_ranks(method)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(split(layer, method, full)(x), layer(x), atol=1e-5, rtol=1e-4)


def test_linear_split_is_two_smaller_layers_with_optimal_error():
    torch.manual_seed(0)
    layer = nn.Linear(784, 300)
    parts = split(layer, "svd", (64,))
    assert [type(p) for p in parts] == [nn.Linear, nn.Linear]
    assert parts[0].weight.shape == (64, 784) and parts[0].bias is None
    assert parts[1].weight.shape == (300, 64) and torch.equal(parts[1].bias, layer.bias)
    assert sum(p.numel() for p in parts.parameters()) == 64 * (784 + 300) + 300
    # Eckart-Young: the error of the best rank-r approximation is the norm of the dropped singular values
    s = torch.linalg.svdvals(layer.weight.detach().double())
    err = torch.linalg.norm(layer.weight.detach().double() - (parts[1].weight @ parts[0].weight).double())
    assert abs(float(err) - float(s[64:].norm())) < 1e-3 * float(s[64:].norm())


def test_factor_scales_are_balanced():
    """Both factors carry Sigma^1/2: their Frobenius norms are equal (good conditioning for fine-tuning)."""
    torch.manual_seed(0)
    parts = split(nn.Linear(64, 32), "svd", (16,))
    assert abs(float(parts[0].weight.norm() - parts[1].weight.norm())) < 1e-4


def test_tucker2_recovers_an_exact_low_channel_rank_weight():
    torch.manual_seed(0)
    core = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    w = torch.einsum("rshw,or,is->oihw", core, torch.randn(12, 5, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64))
    u_in, c, u_out = tucker2(w, 3, 5)
    torch.testing.assert_close(torch.einsum("rshw,or,is->oihw", c, u_out, u_in), w)


def test_hosvd_basis_matches_split_for_svd_methods():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    for method, ranks in (("spatial", (6,)),):
        torch.testing.assert_close(approximation(conv, method, ranks, bases(conv, method)),
                                   approximation(conv, method, ranks))


def test_ineligible_layers_say_why():
    assert "depthwise" in spec_of(nn.Conv2d(8, 8, 3, groups=8))
    assert "LayerNorm" in spec_of(nn.LayerNorm(8))
    assert "asymmetric" in spec_of(nn.Conv2d(4, 4, 2, padding="same"))
    assert "padding_mode" in spec_of(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert spec_of(nn.Conv2d(4, 4, 3, padding_mode="reflect")).kind == "conv"  # no padding: nothing to split


def test_cost_model_matches_the_split_layers():
    """Parameters and MACs the policy estimates equal those of the layers actually built."""
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    x = torch.randn(1, 16, 12, 10)
    y = conv(x)
    g = Geometry(spec_of(conv), tuple(x.shape[1:]), tuple(y.shape[1:]), True)
    for method, ranks in (("spatial", (8,)), ("tucker2", (8, 16)), ("tucker2", (16, 8))):
        parts = split(conv, method, ranks)
        assert params(g, method, ranks) == sum(p.numel() for p in parts.parameters())
        counted, h = 0, x
        for p in parts:
            out = p(h)
            counted += out[0].numel() * p.in_channels * p.kernel_size[0] * p.kernel_size[1]
            h = out
        assert macs(g, method, ranks) == counted
    assert macs(g) == y[0].numel() * 16 * 9 and params(g) == conv.weight.numel() + 32
