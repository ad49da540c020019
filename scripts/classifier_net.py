"""The white-cell classifier network: a compact ResNet that runs fast on a 2-core CPU.

Its first layer is a learned stride-2 convolution on the 0.2 um/px crop (stem
``conv``), so chromatin and granule detail reach the network at little cost: with the
same recipe it measured PBC val 98.49 % against 98.28 % for a fixed 2x average pooling
first (stem ``pool``, 0.4 um/px), and the lowest white-cell recall rose from 95.9 to
97.3 % (models/classifier.md, runs stemconv-e40 and base-e40). Everything after the
stem works at 0.4 um/px and below, which keeps it fast on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NORMS = ("bn", "gn")
GROUPS = 8


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """``bn``: batch normalisation (statistics of the training labs, frozen at export and
    folded into the convolutions); ``gn``: group normalisation over each image's own
    feature maps (Tsutsui et al. 2023: batch statistics are a main cause of the
    cross-lab collapse), at an inference cost since it cannot be folded."""
    if kind == "gn":
        return lambda c: nn.GroupNorm(GROUPS, c)
    return nn.BatchNorm2d


def conv_bn_relu(cin: int, cout: int, stride: int = 1, norm: str = "bn") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        norm_layer(norm)(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str = "bn") -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        self.conv1 = conv_bn_relu(cin, cout, stride, norm)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), make_norm(cout))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class CellNet(nn.Module):
    """Stem -> 4 residual stages -> GAP -> linear.

    Stem ``pool``: AvgPool(downsample), 3x3 conv stride 2. Stem ``conv``: a learned
    3x3 stride-2 conv at the full 0.2 um/px resolution (16 channels), then 3x3 stride 2:
    the same feature-map sizes, but chromatin and granule detail reach the network.
    """

    def __init__(
        self,
        n_classes: int,
        downsample: int = 2,
        stem: int = 24,
        widths: tuple[int, ...] = (32, 64, 128, 192),
        dropout: float = 0.2,
        stem_kind: str = "pool",
        norm: str = "bn",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if stem_kind == "conv":
            layers += [conv_bn_relu(3, 16, 2, norm), conv_bn_relu(16, stem, 2, norm)]
        else:
            if downsample > 1:
                layers.append(nn.AvgPool2d(downsample))
            layers.append(conv_bn_relu(3, stem, 2, norm))
        cin = stem
        for i, width in enumerate(widths):
            layers.append(BasicBlock(cin, width, 1 if i == 0 else 2, norm))
            cin = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in self.modules():
            if isinstance(block, BasicBlock):
                nn.init.zeros_(block.conv2[1].weight)  # each block starts as identity

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate features (what a site-specific head is fitted on)."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(x)))
