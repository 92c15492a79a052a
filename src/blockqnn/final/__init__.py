"""Full training of the final network from one block (``python train.py block=<B>``): the
set-up (:mod:`.build`), the run with its test at the end (:mod:`.fit`), the exports
(:mod:`.export`); Lightning trains (DDP and bf16 where configured)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from blockqnn.final.blocks import resolve_block
from blockqnn.final.build import CheckpointError, check_checkpoint, setup
from blockqnn.final.fit import fit

__all__ = ["CheckpointError", "check_checkpoint", "resolve_block", "train"]


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train ``cfg.block`` in full; its metrics (rank 0; empty on the other DDP ranks)."""
    return fit(setup(cfg, Path(run_dir)))
