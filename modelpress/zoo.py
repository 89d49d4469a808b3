"""Small model definitions: the reference models of the built-in tasks and test models.

Every model takes float32 inputs and returns logits; all are exportable with ``torch.export``.
"""
from __future__ import annotations

import math
from collections import namedtuple

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digit images (input ``[N, 1, 8, 8]``)."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(),
                                        nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet300100(nn.Module):
    """LeNet-300-100: an MLP 784-300-100-10 (input ``[N, 1, 28, 28]``)."""

    def __init__(self, hidden: tuple[int, int] = (300, 100), num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(784, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 in its Caffe form (20 and 50 filters of 5x5, a 500-unit layer; 431k parameters),
    the model of the Deep Compression results, with ReLU. Input ``[N, 1, 28, 28]``."""

    def __init__(self, channels: tuple[int, int] = (20, 50), hidden: int = 500, num_classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    """A ResNet-like CNN with residual additions (input ``[N, C, H, W]``)."""

    def __init__(self, in_channels: int = 1, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class DepthwiseCNN(nn.Module):
    """A depthwise-separable CNN (MobileNet-style blocks, input ``[N, C, H, W]``)."""

    def __init__(self, in_channels: int = 1, width: int = 16, num_classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(block(width, 2 * width, 1), block(2 * width, 4 * width, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v and output projections (so heads can be pruned
    and projections factorized). ``num_heads * head_dim`` may differ from the model width."""

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.q = nn.Linear(dim, inner)
        self.k = nn.Linear(dim, inner)
        self.v = nn.Linear(dim, inner)
        self.o = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.reshape(n, t, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        out = (att @ v).transpose(1, 2).reshape(n, t, self.num_heads * self.head_dim)
        return self.o(out)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TinyTransformer(nn.Module):
    """A small pre-norm transformer classifier over a sequence of feature vectors ``[N, T, F]``."""

    def __init__(self, features: int = 8, seq_len: int = 8, dim: int = 64, depth: int = 2, num_heads: int = 4,
                 ffn: int = 256, num_classes: int = 10):
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, dim))
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.embed(x) + self.pos)
        return self.head(self.norm(x).mean(dim=1))


# ---- EfficientNet-like test model: the structures the reference EfficientNet-Lite2 has ----------------

BlockArgs = namedtuple("BlockArgs", "expand_ratio kernel_size stride se_ratio input_filters output_filters id_skip")
GlobalParams = namedtuple("GlobalParams", "drop_connect_rate image_size num_classes")


class SamePadConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` subclass that pads in its own forward (TensorFlow's "SAME" for a fixed input size,
    asymmetric when the total padding is odd), as EfficientNet-PyTorch's ``Conv2dStaticSamePadding``:
    its ``padding`` attribute is 0, so a technique that calls ``_conv_forward`` or rebuilds the layer from
    its attributes computes something else."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, image_size: int = 16, **kwargs):
        super().__init__(cin, cout, kernel, stride, **kwargs)
        out = math.ceil(image_size / stride)
        pad = max((out - 1) * stride + (kernel - 1) + 1 - image_size, 0)
        self.static_padding = nn.ZeroPad2d((pad // 2, pad - pad // 2) * 2) if pad else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise k x k, squeeze-excite (1x1 convolutions on the pooled
    features, a sigmoid gate), 1x1 projection, a residual add when the shape is kept. Its configuration
    is a namedtuple attribute (``_block_args``); one activation module is called several times."""

    def __init__(self, args: BlockArgs, image_size: int):
        super().__init__()
        self._block_args = args
        hidden = args.input_filters * args.expand_ratio
        if args.expand_ratio != 1:
            self._expand_conv = SamePadConv2d(args.input_filters, hidden, 1, image_size=image_size, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, args.kernel_size, args.stride, image_size,
                                             groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden)
        squeezed = max(1, int(args.input_filters * args.se_ratio))
        self._se_reduce = SamePadConv2d(hidden, squeezed, 1, image_size=1)
        self._se_expand = SamePadConv2d(squeezed, hidden, 1, image_size=1)
        self._project_conv = SamePadConv2d(hidden, args.output_filters, 1, image_size=math.ceil(image_size / args.stride),
                                           bias=False)
        self._bn2 = nn.BatchNorm2d(args.output_filters)
        self._swish = nn.ReLU6()

    def forward(self, inputs: torch.Tensor, drop_connect_rate: float | None = None) -> torch.Tensor:
        x = inputs
        if self._block_args.expand_ratio != 1:
            x = self._swish(self._bn0(self._expand_conv(inputs)))
        x = self._swish(self._bn1(self._depthwise_conv(x)))
        squeezed = self._se_expand(self._swish(self._se_reduce(nn.functional.adaptive_avg_pool2d(x, 1))))
        x = self._bn2(self._project_conv(torch.sigmoid(squeezed) * x))
        a = self._block_args
        if a.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
            x = x + inputs
        return x


class TinyEfficientNet(nn.Module):
    """A small EfficientNet-Lite-like classifier (input ``[N, 3, 16, 16]``): a stride-2 "SAME" stem, three
    MBConv blocks (stride 1, stride 2 with asymmetric padding, a 5x5 residual one), a 1x1 head, pooling and a
    Linear layer; settings are namedtuples (``_global_params``, each block's ``_block_args``)."""

    def __init__(self, width: int = 16, num_classes: int = 10, image_size: int = 16):
        super().__init__()
        self._global_params = GlobalParams(0.2, image_size, num_classes)
        self._conv_stem = SamePadConv2d(3, width, 3, 2, image_size, bias=False)
        self._bn0 = nn.BatchNorm2d(width)
        size = math.ceil(image_size / 2)
        blocks = (BlockArgs(1, 3, 1, 0.25, width, width // 2, True), BlockArgs(4, 3, 2, 0.25, width // 2, width, True),
                  BlockArgs(4, 5, 1, 0.25, width, width, True))
        self._blocks = nn.ModuleList()
        for args in blocks:
            self._blocks.append(MBConv(args, size))
            size = math.ceil(size / args.stride)
        self._conv_head = SamePadConv2d(width, 2 * width, 1, image_size=size, bias=False)
        self._bn1 = nn.BatchNorm2d(2 * width)
        self._fc = nn.Linear(2 * width, num_classes)
        self._swish = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x, drop_connect_rate=self._global_params.drop_connect_rate * i / len(self._blocks))
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
