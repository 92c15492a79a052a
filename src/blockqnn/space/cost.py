"""FLOPs and parameter counts, with torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


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
