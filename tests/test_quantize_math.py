"""The quantizer's math, the calibration observers and the bit packing: pure functions, fast."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelpress.compress._calib import BINS, HistogramObserver, make_observer
from modelpress.compress.quantizer import WeightSpec, act_qparams, fake_quant, quantize
from modelpress.errors import ModelpressError
from modelpress.storage.packed import pack_bits, unpack_bits


def sqnr_db(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    return float(10 * torch.log10((w ** 2).sum() / ((w - w_hat) ** 2).sum()))


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(2, 8), symmetric=st.booleans(), granularity=st.sampled_from(["tensor", "channel", "group"]),
       rows=st.integers(1, 6), cols=st.integers(1, 40), group=st.integers(1, 16), seed=st.integers(0, 999))
def test_error_is_at_most_half_a_step_and_codes_stay_in_range(bits, symmetric, granularity, rows, cols, group, seed):
    w = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32))
    spec = WeightSpec(bits, symmetric, granularity, group)
    qw = quantize(w, spec)
    assert qw.integers().shape == w.shape
    assert qw.codes.min() >= spec.qmin and qw.codes.max() <= spec.qmax
    assert torch.equal(qw.codes, torch.round(qw.codes))
    err = (qw.dequantize() - w).abs()
    assert bool((err <= qw.step() / 2 * (1 + 1e-5) + 1e-7).all())
    # rounding an already-quantized weight again changes nothing (the packed codec relies on it)
    again = fake_quant(qw.dequantize(), spec)
    assert torch.allclose(again, qw.dequantize(), rtol=1e-6, atol=1e-7)


def test_finer_granularity_and_more_bits_lower_the_error():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    w[0] *= 20  # one loud channel ruins a single per-tensor scale
    tensor = sqnr_db(w, fake_quant(w, WeightSpec(8, granularity="tensor")))
    channel = sqnr_db(w, fake_quant(w, WeightSpec(8, granularity="channel")))
    assert channel > tensor + 10
    int4_channel = sqnr_db(w, fake_quant(w, WeightSpec(4, granularity="channel")))
    int4_group = sqnr_db(w, fake_quant(w, WeightSpec(4, granularity="group", group_size=32)))
    assert int4_group > int4_channel and channel > 35
    assert sqnr_db(w, fake_quant(w, WeightSpec(4, clip="mse"))) > int4_channel


def test_asymmetric_zero_is_exact_and_conv_channels_are_axis_0():
    w = torch.rand(8, 3, 3, 3) + 0.5  # all positive: asymmetric range [0, max]
    qw = quantize(w, WeightSpec(4, symmetric=False, granularity="channel"))
    assert qw.scale.shape == (8, 1, 1) and bool((qw.zero_point == 0).all())
    w[:, 0, 0, 0] = 0.0
    assert bool((fake_quant(w, WeightSpec(3, symmetric=False))[:, 0, 0, 0] == 0).all())


def test_straight_through_gradient():
    w = torch.randn(4, 8, requires_grad=True)
    (fake_quant(w, WeightSpec(4)) * torch.arange(8.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(8.0).expand(4, 8))


def test_activation_params():
    scale, zp = act_qparams(0.0, 6.0)  # ReLU output: zero point 0 lets ONNX Runtime drop the ReLU
    assert zp == 0 and scale == pytest.approx(6.0 / 255)
    scale, zp = act_qparams(-1.0, 3.0)
    assert -zp * scale == pytest.approx(-1.0, abs=scale) and (255 - zp) * scale == pytest.approx(3.0, abs=scale)
    assert act_qparams(0.0, 0.0)[0] > 0  # a constant-zero tensor still gets a usable scale


def quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    scale, zp = act_qparams(lo, hi)
    x_hat = (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale
    return float(np.mean((x_hat - x).astype(np.float64) ** 2))


def stream(method, batches):
    obs = make_observer(method)
    for x in batches:
        obs.update(x, "x")
    return obs


def test_observers_clip_outliers_and_keep_constant_memory():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(2000).astype(np.float32) for _ in range(50)]
    batches[7][:3] = 80.0  # three outliers in 100k values
    full = stream("minmax", batches).range()
    assert full[1] == 80.0
    for method in ("percentile", "entropy"):
        obs = stream(method, batches)
        assert isinstance(obs, HistogramObserver) and obs.hist.shape == (BINS,)  # one histogram, any data size
        lo, hi = obs.range()
        assert 2.5 < hi < 20 and -20 < lo < -2.5, (method, lo, hi)
    # MSE keeps what pays: on a heavy-tailed sample its range has the least quantization error of all methods
    heavy = [rng.laplace(size=2000).astype(np.float32) for _ in range(20)]
    data = np.concatenate(heavy)
    errors = {m: quant_mse(data, *stream(m, heavy).range()) for m in ("minmax", "percentile", "mse", "entropy")}
    assert errors["mse"] <= 1.02 * min(errors.values()) and errors["mse"] < 0.95 * errors["minmax"], errors


def test_histogram_streaming_is_order_independent():
    rng = np.random.default_rng(1)
    data = [rng.standard_normal(1000).astype(np.float32) * s for s in (0.1, 1, 10)]
    a, b = make_observer("percentile", 99.0), make_observer("percentile", 99.0)
    for x in data:
        a.update(x, "x")
    for x in reversed(data):
        b.update(x, "x")
    width = a.width / BINS
    assert a.range() == pytest.approx(b.range(), abs=2 * width)
    assert a.hist.sum() + a.zeros == 3000


def test_observer_refuses_nan_and_empty():
    obs = make_observer("mse")
    with pytest.raises(ModelpressError, match="input of layer 'fc'.*NaN or Inf"):
        obs.update(np.array([1.0, np.inf], np.float32), "input of layer 'fc'")
    with pytest.raises(ModelpressError, match="empty"):
        make_observer("minmax").range()


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(2, 8), n=st.integers(0, 300), seed=st.integers(0, 99))
def test_pack_bits_round_trip(bits, n, seed):
    codes = np.random.default_rng(seed).integers(0, 2 ** bits, n).astype(np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.nbytes == -(-n * bits // 8)
    assert np.array_equal(unpack_bits(packed, bits, n), codes)
