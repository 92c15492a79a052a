"""Torch modules built from a block: the block itself and the networks that stack it
(BLOCKQNN.md section 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from blockqnn.errors import ConfigError
from blockqnn.space.budget import resolve
from blockqnn.space.cost import stage_widths
from blockqnn.space.nsc import Block, LayerType
from blockqnn.space.ops import Add, BranchDrop, Concat, Normalize, ReLUConvBN, pool


class BlockModule(nn.Module):
    """One block: input (projected to ``width`` when needed), its layers, and the output made
    by concatenating the layers no other layer uses (then a 1x1 unit back to ``width``)."""

    def __init__(self, block: Block, in_channels: int, width: int, drop_path: float = 0.0):
        super().__init__()
        self.block = block
        self.project = ReLUConvBN(in_channels, width, 1) if in_channels != width else nn.Identity()
        ops: list[nn.Module] = []
        for layer in block.body:
            kind = LayerType(layer.type)
            if kind == LayerType.CONV:
                ops.append(ReLUConvBN(width, width, layer.kernel))
            elif kind == LayerType.MAX_POOL:
                ops.append(pool("max", layer.kernel))
            elif kind == LayerType.AVG_POOL:
                ops.append(pool("avg", layer.kernel))
            elif kind == LayerType.IDENTITY:
                ops.append(nn.Identity())
            elif kind == LayerType.ADD:
                ops.append(Add())
            else:
                ops.append(Concat(2, width))
        self.ops = nn.ModuleList(ops)
        self._preds = [layer.preds for layer in block.body]
        self._leaves = block.leaves
        self.output = Concat(len(self._leaves), width) if len(self._leaves) > 1 else nn.Identity()
        self.drop_path = BranchDrop(drop_path)  # at joins only (see BranchDrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.project(x)]
        for op, preds in zip(self.ops, self._preds):
            ins = [outs[p] for p in preds]
            outs.append(op(*(self.drop_path(ins) if len(ins) > 1 else ins)))
        return self.output(*self.drop_path([outs[i] for i in self._leaves]))


@dataclass(frozen=True)
class NetworkSpec:
    """What a network is built for."""

    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    blocks_per_stage: int = 2  # N
    width: int = 32  # F of the first stage, doubled after each pooling
    stages: int = 3
    drop_path: float = 0.0
    widths: tuple[int, ...] | None = None  # each stage's width (a budget's choice) instead

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return stage_widths(self.width, self.stages, self.widths)


class BlockNetwork(nn.Module):
    """The input's normalisation (:class:`Normalize`: the network takes float images in
    [0, 1]), the stem, ``stages`` stages of N blocks with max pooling /2 between them (each
    stage twice as wide as the previous one, or ``spec.widths``), then ReLU, global average
    pooling and a linear classifier."""

    def __init__(self, block: Block, spec: NetworkSpec, stem: nn.Module):
        super().__init__()
        self.block = block
        self.spec = spec
        self.normalize = Normalize(spec.in_channels)
        self.stem = stem
        layers: list[nn.Module] = []
        widths = spec.stage_widths
        channels = widths[0]
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(spec.blocks_per_stage):
                layers.append(BlockModule(block, channels, width, spec.drop_path))
                channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, spec.num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(self.normalize(x))))


def cifar_stem(spec: NetworkSpec) -> nn.Module:
    width = spec.stage_widths[0]
    return nn.Sequential(
        nn.Conv2d(spec.in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
    )


def imagenet_stem(spec: NetworkSpec) -> nn.Module:
    width = spec.stage_widths[0]
    return nn.Sequential(
        nn.Conv2d(spec.in_channels, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


#: Named network families, timm-style: name -> stem builder.
STEMS: dict[str, Callable[[NetworkSpec], nn.Module]] = {
    "cifar": cifar_stem,
    "imagenet": imagenet_stem,
}


def build_network(block: Block | str | list, kind: str = "cifar", **spec_kwargs) -> BlockNetwork:
    """Build the ``kind`` network ('cifar' or 'imagenet') from a block; with a budget
    (``params=`` or ``flops=``, :mod:`blockqnn.space.budget`) at the widths it chooses."""

    if kind not in STEMS:
        raise ConfigError(f"unknown network kind {kind!r}; known: {', '.join(sorted(STEMS))}")
    if not isinstance(block, Block):
        block = Block.parse(block)
    spec_kwargs, _ = resolve(block, {**spec_kwargs, "kind": kind})
    spec_kwargs.pop("kind")
    if spec_kwargs.get("widths") is not None:
        spec_kwargs["widths"] = tuple(spec_kwargs["widths"])
    spec = NetworkSpec(**spec_kwargs)
    return BlockNetwork(block, spec, STEMS[kind](spec))
