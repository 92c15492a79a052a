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


class BranchDrop(nn.Module):
    """Drop-path where it regularises: at a join (an add, a concat, the block's output concat)
    each input branch is zeroed per sample with probability ``p`` and the survivors scaled by
    1 / (1 - p), as timm's DropPath does, except that at least one input of every join
    survives for every sample (FractalNet's local drop-path rule): a join never outputs an
    all-zero sample, and a block whose output is a single path (a chain) is never dropped."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.training or self.p <= 0 or len(xs) < 2:
            return xs
        k, n = len(xs), xs[0].shape[0]
        device = xs[0].device
        keep = torch.rand(k, n, device=device) >= self.p
        lost = ~keep.any(0)  # samples that dropped every input: one, drawn at random, survives
        keep |= nn.functional.one_hot(torch.randint(k, (n,), device=device), k).T.bool() & lost
        scale = keep.to(xs[0].dtype) / (1.0 - self.p)
        return [x * scale[i].view(n, *([1] * (x.dim() - 1))) for i, x in enumerate(xs)]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics as buffers: the network's first
    layer, so checkpoints and exports (TorchScript, ONNX) carry the preprocessing and take
    float images in [0, 1]. The statistics are the training split's, set by the training."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype).flatten())
        self.std.copy_(torch.as_tensor(std, dtype=self.std.dtype).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
