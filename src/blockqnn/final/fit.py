"""train.py's run: draw the block and its network, fit (resuming where a checkpoint says), then
the final weights on the validation split (the tuning objective) and on the test split, read
here for the first time; metrics.json and the exports."""

from __future__ import annotations

import json
import time
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from blockqnn.final.build import Setup
from blockqnn.final.export import export
from blockqnn.space.cost import count_flops, count_params
from blockqnn.space.draw import draw_block, draw_network


def fit(s: Setup) -> dict[str, Any]:
    trainer, model, dm, run_dir, block = s.trainer, s.model, s.datamodule, s.run_dir, s.block
    wandb = isinstance(trainer.logger, WandbLogger)
    if trainer.is_global_zero:
        draw_block(block, run_dir / "block.png")
        draw_network(block, s.spec, run_dir / "network.png")
        if wandb:
            trainer.logger.log_image(key="block", images=[str(run_dir / "block.png")])
            trainer.logger.log_image(key="network", images=[str(run_dir / "network.png")])
    start = time.perf_counter()
    trainer.fit(
        model,
        datamodule=dm,
        ckpt_path=str(s.ckpt_path) if s.ckpt_path else None,
        weights_only=True,
    )
    wall = time.perf_counter() - start
    # The weights at the end of fit (the EMA's where train.ema is set): validation, then test.
    val = trainer.validate(model, datamodule=dm, verbose=False)
    test = trainer.test(model, datamodule=dm, verbose=False) if s.cfg.train.test else None
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        c, h, _ = dm.shape
        metrics = {
            "block": block.to_list(),
            "key": block.key,
            "test_acc": float(test[0]["test/acc"]) if test else None,
            "val_acc": float(val[0]["val/acc"]) if val else None,
            "params": count_params(model.net),
            "widths": list(model.net.spec.stage_widths),
            "flops": count_flops(model.net, (c, h, h)),
            "epochs": int(trainer.current_epoch),
            "wall_time": wall,
            "resumed_from": str(s.ckpt_path) if s.ckpt_path else None,
            "images_per_second": s.throughput.rate,
        }
        if s.cfg.train.export:
            example = next(iter(dm.val_dataloader()))[0][:2]  # its shape only
            metrics["exports"] = export(model, example, run_dir, block)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if wandb:
            trainer.logger.experiment.finish()
    return metrics
