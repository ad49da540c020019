"""The detector network (training side only; the board runs its ONNX export).

A small fully-convolutional encoder (strides 2-16) with a feature-pyramid decoder back
to stride 4, and two 1x1 heads: a centre-heatmap logit and a 4-channel regression (centre
offset within the heatmap cell, log box width and height in model pixels). Plain
3x3 convolutions, batch norm and ReLU only, so the graph quantises cleanly to INT8 and
onnxruntime fuses every conv with its activation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DetectorNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int, int] = (16, 32, 48, 80), fpn: int = 40) -> None:
        super().__init__()
        a, b, c, d = widths
        self.stem = conv_bn_relu(3, a, 2)
        self.stage4 = nn.Sequential(conv_bn_relu(a, b, 2), conv_bn_relu(b, b))
        self.stage8 = nn.Sequential(conv_bn_relu(b, c, 2), conv_bn_relu(c, c))
        self.stage16 = nn.Sequential(
            conv_bn_relu(c, d, 2), conv_bn_relu(d, d), conv_bn_relu(d, d, dilation=2)
        )
        self.top = nn.Conv2d(d, fpn, 1)
        self.lateral8 = nn.Conv2d(c, fpn, 1)
        self.lateral4 = nn.Conv2d(b, fpn, 1)
        self.smooth8 = conv_bn_relu(fpn, fpn)
        self.smooth4 = conv_bn_relu(fpn, fpn)
        self.head = conv_bn_relu(fpn, fpn)
        self.heatmap = nn.Conv2d(fpn, 1, 1)
        self.regression = nn.Conv2d(fpn, 4, 1)
        # Start with a low centre probability everywhere (focal-loss practice).
        nn.init.constant_(self.heatmap.bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c4 = self.stage4(self.stem(x))
        c8 = self.stage8(c4)
        c16 = self.stage16(c8)
        p = self.top(c16)
        p = self.smooth8(self.lateral8(c8) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        p = self.smooth4(self.lateral4(c4) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        h = self.head(p)
        return self.heatmap(h), self.regression(h)


def fuse_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the conv before it (for export; ``model`` must be in eval)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2:
            conv, bn = module[0], module[1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module[0] = fuse_conv_bn_eval(conv, bn)
                module[1] = nn.Identity()
    return model
