"""Low-rank mechanics: which layers can be factorized, their decompositions, and the split layers.

Three methods (every one keeps the layer's input and output shapes):

- ``svd``: a Linear (or a 1x1 convolution) with weight W (m x n) becomes two layers of rank r, first
  ``Sigma_r^1/2 V_r^T`` (r x n, no bias) then ``U_r Sigma_r^1/2`` (m x r, the original bias).
- ``spatial``: a kh x kw convolution becomes a kh x 1 convolution into r channels, then a 1 x kw
  convolution; the SVD is of W reshaped to (cin*kh) x (cout*kw).
- ``tucker2``: a kh x kw convolution becomes a 1x1 convolution into r_in channels, a kh x kw core
  convolution into r_out channels, then a 1x1 convolution back to cout (HOOI on the channel modes).
  A rank equal to its full channel count drops that 1x1 stage.

Decompositions run in float64 and the results are cast back to the layer's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

METHODS = ("svd", "spatial", "tucker2")


@dataclass(frozen=True)
class Spec:
    """The geometry of an eligible layer. For a Linear, ``cin``/``cout`` are in/out features and
    ``kernel`` is (1, 1)."""

    kind: str  # "linear" | "conv"
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)

    @property
    def methods(self) -> tuple[str, ...]:
        if self.kind == "linear" or self.kernel == (1, 1):
            return ("svd",)
        return ("spatial", "tucker2")

    def max_ranks(self, method: str) -> tuple[int, ...]:
        """The largest rank of each factor (a rank above it is an error)."""
        kh, kw = self.kernel
        if method == "svd":
            return (min(self.cin, self.cout),)
        if method == "spatial":
            return (min(self.cin * kh, self.cout * kw),)
        return (self.cin, self.cout)


def conv_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """Symmetric zero padding as (ph, pw), or None when it cannot be split per axis."""
    pad = conv.padding
    if isinstance(pad, str):
        if pad == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        if any(t % 2 for t in total):  # 'same' with an even receptive field pads asymmetrically
            return None
        return (total[0] // 2, total[1] // 2)
    return (int(pad[0]), int(pad[1]))


def spec_of(module: nn.Module) -> Spec | str:
    """The Spec of a layer that can be factorized, else the reason it cannot (a sentence)."""
    if isinstance(module, nn.Linear):
        return Spec("linear", module.in_features, module.out_features)
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"a grouped or depthwise Conv2d (groups={module.groups}) has no channel matrix to factorize"
        if module.padding_mode != "zeros" and conv_padding(module) != (0, 0):
            return f"a Conv2d with padding_mode '{module.padding_mode}' cannot be split into two convolutions"
        if conv_padding(module) is None:
            return "a Conv2d with asymmetric 'same' padding cannot be split into two convolutions"
        return Spec("conv", module.in_channels, module.out_channels, tuple(module.kernel_size))
    return (f"a {type(module).__name__} is not a layer low-rank factorization applies to "
            f"(Linear and Conv2d with groups=1)")


# ---- spectra and decompositions -------------------------------------------------------------------

def matrix(module: nn.Module, method: str) -> torch.Tensor:
    """The float64 matrix whose SVD the method truncates (svd and spatial)."""
    w = module.weight.detach().to(torch.float64)
    if method == "svd":
        return w.reshape(w.shape[0], -1)  # Linear (m x n) or 1x1 conv (cout x cin)
    cout, cin, kh, kw = w.shape
    return w.permute(1, 2, 0, 3).reshape(cin * kh, cout * kw)  # rows (c, a), columns (o, b)


def unfoldings(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode-0 (cout x rest) and mode-1 (cin x rest) unfoldings of a conv weight, float64."""
    w = module.weight.detach().to(torch.float64)
    return w.reshape(w.shape[0], -1), w.transpose(0, 1).reshape(w.shape[1], -1)


def spectra(module: nn.Module, method: str) -> tuple[torch.Tensor, ...]:
    """Squared singular values, descending: one vector for svd/spatial, (cout-mode, cin-mode) for tucker2."""
    if method == "tucker2":
        return tuple(torch.linalg.svdvals(u) ** 2 for u in unfoldings(module))
    return (torch.linalg.svdvals(matrix(module, method)) ** 2,)


def _svd_factors(m: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(left r columns scaled by sqrt(S), sqrt(S)-scaled right rows) with left @ right = best rank-r m."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]


def _leading(m: torch.Tensor, r: int) -> torch.Tensor:
    return torch.linalg.svd(m, full_matrices=False)[0][:, :r]


def tucker2(weight: torch.Tensor, r_in: int, r_out: int, iters: int = 3
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOOI on the channel modes: W ~= core x0 u_out x1 u_in with orthonormal u_out (cout x r_out),
    u_in (cin x r_in) and core (r_out x r_in x kh x kw), all float64."""
    w = weight.to(torch.float64)
    cout, cin = w.shape[:2]
    u_out = _leading(w.reshape(cout, -1), r_out)
    u_in = _leading(w.transpose(0, 1).reshape(cin, -1), r_in)
    for _ in range(iters):
        t = torch.einsum("oihw,is->oshw", w, u_in)
        u_out = _leading(t.reshape(cout, -1), r_out)
        t = torch.einsum("oihw,or->irhw", w, u_out)
        u_in = _leading(t.reshape(cin, -1), r_in)
    core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)
    return u_in, core, u_out


# ---- the split layers and the dense reconstruction -----------------------------------------------

def _bias(module: nn.Module) -> torch.Tensor | None:
    return None if module.bias is None else module.bias.detach().clone()


def _set(layer: nn.Module, weight: torch.Tensor, like: nn.Module, bias: torch.Tensor | None = None) -> nn.Module:
    ref = like.weight
    layer = layer.to(device=ref.device, dtype=ref.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape).to(ref.dtype))
        if bias is not None:
            layer.bias.copy_(bias)
    return layer.train(like.training)


def _conv(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
          padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1), bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bias)


def split(module: nn.Module, method: str, ranks: tuple[int, ...]) -> nn.Sequential:
    """The layer as a sequence of smaller layers of the given ranks (same inputs and outputs)."""
    bias = _bias(module)
    has_bias = bias is not None
    if method == "svd":
        (r,) = ranks
        left, right = _svd_factors(matrix(module, "svd"), r)  # (m x r), (r x n)
        if isinstance(module, nn.Linear):
            first = nn.Linear(module.in_features, r, bias=False)
            second = nn.Linear(r, module.out_features, bias=has_bias)
        else:
            first = _conv(module.in_channels, r, (1, 1), module.stride, conv_padding(module))
            second = _conv(r, module.out_channels, (1, 1), bias=has_bias)
        return nn.Sequential(_set(first, right, module), _set(second, left, module, bias))
    cout, cin, kh, kw = module.weight.shape
    (sh, sw), (dh, dw), (ph, pw) = module.stride, module.dilation, conv_padding(module)
    if method == "spatial":
        (r,) = ranks
        left, right = _svd_factors(matrix(module, "spatial"), r)  # ((cin*kh) x r), (r x (cout*kw))
        w1 = left.reshape(cin, kh, r).permute(2, 0, 1)  # [r, cin, kh] -> conv kh x 1
        w2 = right.reshape(r, cout, kw).permute(1, 0, 2)  # [cout, r, kw] -> conv 1 x kw
        first = _conv(cin, r, (kh, 1), (sh, 1), (ph, 0), (dh, 1))
        second = _conv(r, cout, (1, kw), (1, sw), (0, pw), (1, dw), bias=has_bias)
        return nn.Sequential(_set(first, w1, module), _set(second, w2, module, bias))
    if method == "tucker2":
        r_in, r_out = ranks
        u_in, core, u_out = tucker2(module.weight.detach(), r_in, r_out)
        layers: list[nn.Module] = []
        if r_in < cin:
            layers.append(_set(_conv(cin, r_in, (1, 1)), u_in.T, module))
        else:
            core = torch.einsum("rshw,is->rihw", core, u_in)  # fold the (square) input basis into the core
        last = r_out == cout
        if last:
            core = torch.einsum("rshw,or->oshw", core, u_out)
        layers.append(_set(_conv(r_in, r_out, (kh, kw), (sh, sw), (ph, pw), (dh, dw), bias=last and has_bias),
                           core, module, bias if last else None))
        if not last:
            layers.append(_set(_conv(r_out, cout, (1, 1), bias=has_bias), u_out, module, bias))
        return nn.Sequential(*layers)
    raise ValueError(f"unknown low-rank method {method!r}; expected one of {METHODS}")


def bases(module: nn.Module, method: str) -> tuple[torch.Tensor, ...]:
    """The full decomposition a truncation reads (float64): (U, S, Vh) for svd/spatial; for tucker2 the
    left singular vectors of the cout-mode and cin-mode unfoldings (HOSVD). Compute once per layer and
    pass to :func:`approximation` to try many ranks cheaply."""
    if method == "tucker2":
        return tuple(torch.linalg.svd(u, full_matrices=False)[0] for u in unfoldings(module))
    return tuple(torch.linalg.svd(matrix(module, method), full_matrices=False))


def approximation(module: nn.Module, method: str, ranks: tuple[int, ...],
                  basis: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """The layer's weight replaced by its rank-limited approximation (same shape, same cost: no saving).

    Without ``basis`` it is built from the same factors as :func:`split`, so the two agree up to float
    rounding. With ``basis`` (from :func:`bases`) svd/spatial are identical, and tucker2 is the HOSVD
    truncation, which the HOOI of :func:`split` only improves on."""
    w = module.weight.detach()
    w64 = w.to(torch.float64)
    if method == "tucker2":
        if basis is None:
            u_in, core, u_out = tucker2(w, *ranks)
        else:
            u_in, u_out = basis[1][:, :ranks[0]], basis[0][:, :ranks[1]]
            core = torch.einsum("oihw,or,is->rshw", w64, u_out, u_in)
        approx = torch.einsum("rshw,or,is->oihw", core, u_out, u_in)
    else:
        r = ranks[0]
        if basis is None:
            left, right = _svd_factors(matrix(module, method), r)
            approx = left @ right
        else:
            u, s, vh = basis
            approx = (u[:, :r] * s[:r]) @ vh[:r]
        if method == "spatial":
            cout, cin, kh, kw = w.shape
            approx = approx.reshape(cin, kh, cout, kw).permute(2, 0, 1, 3)
    return approx.reshape(w.shape).to(w.dtype)
