"""train.py's set-up: the block, its data, the network and the Lightning Trainer with its
callbacks and logger (a resumed run's checkpoint checked first); :mod:`blockqnn.final.fit` runs it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from blockqnn.config import TrainConfig, build, check
from blockqnn.data.modules import store_as
from blockqnn.errors import BlockQNNError, ConfigError
from blockqnn.evaluator.module import BlockClassifier
from blockqnn.evaluator.training import quiet_lightning, user_callbacks
from blockqnn.final.blocks import resolve_block
from blockqnn.search.loggers import run_id, wandb_mode
from blockqnn.space.budget import resolve as resolve_budget
from blockqnn.space.nsc import Block


class CheckpointError(BlockQNNError):
    """A checkpoint that is missing, unreadable or for another block."""


class Throughput(L.Callback):
    """Training images per second of this run (all ranks), validation excluded. Kept rather than
    Lightning's ThroughputMonitor, which only logs to the Trainer's loggers (none with
    logger=none) while metrics.json needs the figure itself."""

    def __init__(self):
        self.images, self.seconds, self._t = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t
        self.images += int(batch[0].shape[0]) * trainer.world_size

    @property
    def rate(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


def _lightning_logger(cfg: DictConfig, run_dir: Path, block: Block):
    target = str(cfg.logger.get("_target_", ""))
    if target.endswith("WandbLogger"):
        mode = wandb_mode(cfg.logger.get("mode"))
        return WandbLogger(
            project=cfg.logger.project,
            save_dir=str(run_dir),
            id=run_id(run_dir, "bqt"),
            offline=(mode == "offline"),
            resume="allow",
            name=f"train {block.key[:8]}",
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    if target.endswith("CSVLogger"):
        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    return False


def check_checkpoint(path: Path, block: Block) -> None:
    """Refuse a missing checkpoint, or one written for another block."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"checkpoint {path} cannot be read with weights_only=True: {exc}"
        ) from None
    nsc = (ckpt.get("hyper_parameters") or {}).get("nsc")
    if nsc is None:
        raise CheckpointError(
            f"checkpoint {path} was not written by blockqnn (no block in its hyperparameters)"
        )
    if Block.parse(nsc).key != block.key:
        raise CheckpointError(
            f"checkpoint {path} is for block {json.dumps(nsc)}, not {block.to_json()}"
        )


@dataclass
class Setup:
    """What :func:`setup` prepares for :func:`blockqnn.final.fit.fit`."""

    cfg: DictConfig
    run_dir: Path
    block: Block
    datamodule: Any
    spec: dict
    model: BlockClassifier
    trainer: L.Trainer
    throughput: Throughput
    ckpt_path: Path | None


def setup(cfg: DictConfig, run_dir: Path) -> Setup:
    """Check the config and the checkpoint to resume from, build the data, the network and the
    Trainer (its callbacks: checkpoints, throughput, the user's, the EMA of the weights)."""
    quiet_lightning()
    check(cfg, TrainConfig)
    run_dir = Path(run_dir)
    block = resolve_block(cfg.block)
    t = cfg.train
    explicit = t.get("ckpt_path")
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = Path(explicit) if explicit else (last if t.resume and last.exists() else None)
    if ckpt_path is not None:
        check_checkpoint(ckpt_path, block)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = (
        "cuda"
        if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
        else "cpu"
    )
    ddp = cfg.trainer.get("strategy") == "ddp"
    world = int(cfg.trainer.devices) * int(cfg.trainer.get("num_nodes") or 1) if ddp else 1
    if int(t.batch_size) % world:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is the global batch and must divide by the "
            f"{world} DDP processes (trainer.devices x trainer.num_nodes)"
        )
    # train.batch_size is the global batch: each DDP rank takes its share.
    # The validation split is drawn with train.split_seed, the same for every training seed:
    # seeds vary the initialisation and the data order, never which images validate.
    dm = store_as(
        build(
            cfg.data,
            "data",
            batch_size=int(t.batch_size) // world,
            seed=int(t.split_seed),
            device=device if not ddp else "cpu",
        ),
        bool(cfg.network.get("channels_last", False)),
    )
    dm.order_seed = int(cfg.seed)
    dm.setup("fit")
    check_test = getattr(dm, "check_test", None)
    if check_test is not None:  # a bad test split is refused now, not after the training
        check_test()
    c, h, _ = dm.shape
    # A budget (network.params / flops) chooses the stage widths: the rule a search uses.
    spec, _ = resolve_budget(
        block,
        {
            **OmegaConf.to_container(cfg.network, resolve=True),
            "num_classes": dm.num_classes,
            "in_channels": c,
            "input_size": h,
        },
    )
    scheduler = (
        OmegaConf.to_container(cfg.model.scheduler, resolve=True) if cfg.model.scheduler else None
    )
    model = BlockClassifier(
        block.to_list(),
        spec,
        OmegaConf.to_container(cfg.model.optimizer, resolve=True),
        scheduler,
        label_smoothing=float(t.label_smoothing),
    )
    callbacks: list = [
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="epoch{epoch:03d}",
            auto_insert_metric_name=False,
            save_last=True,
            every_n_epochs=1,
        )
    ]
    throughput = Throughput()
    callbacks.append(throughput)
    callbacks += user_callbacks(cfg.callbacks)
    if t.get("ema"):  # the weights' EMA, swapped in for validation and kept at the end
        callbacks.append(EMAWeightAveraging(decay=float(t.ema)))
    logger = _lightning_logger(cfg, run_dir, block)
    for key in ("max_epochs", "callbacks", "logger", "default_root_dir"):
        if key in cfg.trainer:
            raise ConfigError(
                f"trainer.{key} is set by train.py (max_epochs: train.epochs; callbacks: callbacks=...; "
                "logger: logger=...); remove it"
            )
    trainer = instantiate(
        OmegaConf.to_container(cfg.trainer, resolve=True),
        max_epochs=int(t.epochs),
        callbacks=callbacks,
        logger=logger,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return Setup(cfg, run_dir, block, dm, spec, model, trainer, throughput, ckpt_path)
