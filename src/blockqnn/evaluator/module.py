"""The LightningModule around a network built from a block."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from blockqnn.space.network import build_network
from blockqnn.space.nsc import Block


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


class BlockClassifier(L.LightningModule):
    """Classifies images with the network stacked from ``nsc``.

    The block is saved in the hyperparameters as plain data (a list of 5-int lists), so a
    checkpoint rebuilds its own network: ``BlockClassifier.load_from_checkpoint(path)``.
    """

    def __init__(
        self,
        nsc: list[list[int]],
        network: dict[str, Any],
        optim: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        block = Block.parse(nsc)
        self.save_hyperparameters({"nsc": block.to_list(), "network": dict(network),
                                   "optim": dict(optim or {}), "label_smoothing": label_smoothing})
        self.block = block
        network = dict(network)
        self.channels_last = bool(network.pop("channels_last", False))
        self.net = build_network(block, **network)
        if self.channels_last:  # NHWC convolutions: faster with tensor cores
            self.net = self.net.to(memory_format=torch.channels_last)
        classes = int(network["num_classes"])
        self.val_acc = MulticlassAccuracy(num_classes=classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=classes, average="micro")
        self.register_buffer("_nonfinite", torch.zeros((), dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        # Record non-finite losses without a host sync on every step; checked per epoch.
        self._nonfinite |= ~torch.isfinite(loss.detach())
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        if bool(self._nonfinite):
            raise DivergedError(f"non-finite training loss in epoch {self.current_epoch}")

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc.update(self(x), y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute(), prog_bar=True, sync_dist=True)
        self.val_acc.reset()

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc.update(self(x), y)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute(), sync_dist=True)
        self.test_acc.reset()

    def configure_optimizers(self):
        """The search-time recipe by default: Adam, learning rate x ``lr_gamma`` every
        ``lr_step`` epochs. ``optim.name`` = 'sgd' and ``schedule`` = 'cosine' are used by
        final training (see :mod:`blockqnn.train`)."""
        o = {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "lr_step": 5, "lr_gamma": 0.2, "schedule": "step", **self.hparams.optim}
        if o["name"] == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=o["lr"], betas=tuple(o["betas"]),
                                   eps=o["eps"], weight_decay=o["weight_decay"])
        elif o["name"] == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=o["lr"], momentum=o.get("momentum", 0.9),
                                  nesterov=bool(o.get("nesterov", True)), weight_decay=o["weight_decay"])
        else:
            raise ValueError(f"unknown optimizer {o['name']!r} (adam, sgd)")
        if o["schedule"] == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(o["lr_step"]), gamma=float(o["lr_gamma"]))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        if o["schedule"] == "cosine":
            from timm.scheduler import CosineLRScheduler

            steps = int(self.trainer.estimated_stepping_batches)
            per_epoch = max(1, steps // max(1, self.trainer.max_epochs))
            sched = CosineLRScheduler(opt, t_initial=steps, warmup_t=int(o.get("warmup_epochs", 5)) * per_epoch,
                                      warmup_lr_init=o["lr"] * 0.01, lr_min=o.get("lr_min", 0.0), t_in_epochs=False)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        raise ValueError(f"unknown schedule {o['schedule']!r} (step, cosine)")

    def lr_scheduler_step(self, scheduler, metric):
        if hasattr(scheduler, "step_update"):  # timm schedulers step by update count
            scheduler.step_update(num_updates=self.global_step)
        else:
            scheduler.step()
