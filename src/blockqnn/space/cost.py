"""FLOPs and parameter counts, with torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blockqnn.space.nsc import Block, LayerType


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one forward pass on one input of ``input_shape`` (C, H, W), as counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2)."""
    was_training = module.training
    module.eval()
    try:
        param = next(module.parameters(), None)
        device = param.device if param is not None else "cpu"
        x = torch.zeros((1, *input_shape), device=device)
        with FlopCounterMode(display=False) as counter:
            module(x)
        return int(counter.get_total_flops())
    finally:
        module.train(was_training)


def stage_widths(width: int, stages: int, widths=None) -> tuple[int, ...]:
    """Each stage's width: ``widths`` when given (one per stage), else ``width`` doubling."""
    if widths is None:
        return tuple(int(width) * 2**s for s in range(int(stages)))
    widths = tuple(int(w) for w in widths)
    if len(widths) != int(stages) or min(widths) < 1:
        raise ValueError(f"widths {list(widths)} must be {stages} positive stage widths")
    return widths


def _conv(c_in: int, c_out: int, k: int, hw: int, bn: bool = True) -> tuple[int, int]:
    """(FLOPs, parameters) of one k x k convolution (with its batch norm) on hw pixels."""
    return 2 * c_in * c_out * k * k * hw, c_in * c_out * k * k + (2 * c_out if bn else 0)


def _block_layers(block: Block, w: int, hw: int) -> list[tuple[int, int]]:
    """(FLOPs, parameters) of a block's own layers at width ``w`` on hw pixels: its
    convolutions, each concatenation's 1x1 reduction, and the output's 1x1 reduction when it
    has several leaves (not the projection of a wider or narrower input)."""
    parts = [_conv(w, w, layer.kernel, hw) for layer in block.body if layer.type == LayerType.CONV]
    parts += [_conv(2 * w, w, 1, hw)] * sum(layer.type == LayerType.CONCAT for layer in block.body)
    if len(block.leaves) > 1:
        parts.append(_conv(len(block.leaves) * w, w, 1, hw))
    return parts


def block_params(block, width: int = 1) -> int:
    """The parameters of one block's own layers at ``width`` (see :func:`_block_layers`); 0 for
    a block of pooling, identity and add layers only (blockqnn.space.budget refuses those at a
    budget)."""
    if not isinstance(block, Block):
        block = Block.parse(block)
    return sum(p for _, p in _block_layers(block, int(width), 1))


def network_cost(
    block,
    kind: str = "cifar",
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    blocks_per_stage: int = 2,
    width: int = 32,
    stages: int = 3,
    widths: tuple[int, ...] | list[int] | None = None,
    **rest,
) -> tuple[int, int]:
    """(FLOPs, parameters) of :func:`blockqnn.space.network.build_network`'s network for
    ``block``, computed from the NSC without building it: what :func:`count_flops` (convolutions
    and the classifier, a multiply-add counting 2) and :func:`count_params` give, thousands of
    times faster (the surrogate evaluator prices every sampled block this way). ``widths``:
    each stage's width (default ``width`` doubling per stage); a budget (``params`` or
    ``flops``, :mod:`blockqnn.space.budget`) chooses them. Options that do not change the
    architecture (drop_path, channels_last) are ignored."""

    if not isinstance(block, Block):
        block = Block.parse(block)
    if any(rest.get(k) is not None for k in ("params", "flops")):
        raise ValueError(
            "a budget (params / flops) is resolved into widths first: blockqnn.space.budget.resolve"
        )
    widths = stage_widths(width, stages, widths)
    width = widths[0]
    flops = params = 0
    size = int(input_size)
    if kind == "imagenet":
        size = (size + 6 - 7) // 2 + 1
        f, p = _conv(in_channels, width, 7, size * size)
        size = (size + 2 - 3) // 2 + 1
    else:
        f, p = _conv(in_channels, width, 3, size * size)
    flops, params = flops + f, params + p
    channels = width
    for stage in range(stages):
        w = widths[stage]
        if stage > 0:
            size //= 2
        hw = size * size
        for _ in range(blocks_per_stage):
            parts = _block_layers(block, w, hw)
            if channels != w:
                parts.append(_conv(channels, w, 1, hw))
            flops += sum(f for f, _ in parts)
            params += sum(p for _, p in parts)
            channels = w
    flops += 2 * channels * num_classes
    params += channels * num_classes + num_classes
    return int(flops), int(params)
