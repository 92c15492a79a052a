"""The operations a block is made of (BLOCKQNN.md section 2, channel rules [ours])."""

from __future__ import annotations

import torch
from torch import nn


class ReLUConvBN(nn.Sequential):
    """The paper's pre-activation convolution unit: ReLU, then Conv, then BatchNorm."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def pool(kind: str, kernel: int) -> nn.Module:
    """Stride-1, same-padding pooling: a block never changes the spatial size."""
    if kernel == 1:
        return nn.Identity()  # a 1x1 pool with stride 1 is the identity
    if kind == "max":
        return nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)
    return nn.AvgPool2d(kernel, stride=1, padding=kernel // 2, count_include_pad=False)


class Add(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Concat(nn.Module):
    """Concatenates its inputs, then a 1x1 ReLU-Conv-BN brings them back to ``width``."""

    def __init__(self, inputs: int, width: int):
        super().__init__()
        self.project = ReLUConvBN(inputs * width, width, 1)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat(xs, dim=1))
