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

    The block is saved in the hyperparameters as plain data (a list of 5-int lists), with the
    optimizer and scheduler as their config nodes (``_target_``, ``_partial_``), so a
    checkpoint rebuilds its own network: ``BlockClassifier.load_from_checkpoint(path)``.
    """

    def __init__(
        self,
        nsc: list[list[int]],
        network: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        block = Block.parse(nsc)
        self.save_hyperparameters(
            {
                "nsc": block.to_list(),
                "network": dict(network),
                "optimizer": dict(optimizer),
                "scheduler": dict(scheduler) if scheduler else None,
                "label_smoothing": label_smoothing,
            }
        )
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
        self._loss_sum, self._loss_n = (
            torch.zeros(()),
            0,
        )  # this epoch's training loss (see training_step)

    def setup(self, stage: str) -> None:
        """Take the training split's normalisation statistics from the data module (a
        checkpoint being resumed then loads its own, the same)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "mean", None) is not None:
            self.net.normalize.set(dm.mean, dm.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        # Record non-finite losses without a host sync on every step; checked per epoch.
        detached = loss.detach()
        self._nonfinite |= ~torch.isfinite(detached)
        # The epoch's mean loss (weighted by batch size, as Lightning's on_epoch logging), summed
        # on the device and logged once an epoch: a self.log per step costs ~1 ms of Python.
        self._loss_sum = self._loss_sum + detached * len(y)
        self._loss_n += len(y)
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_n = torch.zeros((), device=self.device), 0

    def epoch_train_loss(self) -> float | None:
        """The mean training loss of the epoch so far (None before its first batch)."""
        return float(self._loss_sum / self._loss_n) if self._loss_n else None

    def on_train_epoch_end(self) -> None:
        if bool(self._nonfinite):
            raise DivergedError(f"non-finite training loss in epoch {self.current_epoch}")
        if self._loss_n:
            self.log("train/loss", self._loss_sum / self._loss_n)

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
        """The optimizer and scheduler of the config (``model.optimizer`` / ``model.scheduler``,
        ``_partial_`` targets in conf/model/): Adam with a step decay for the search recipe,
        SGD with timm's warm-up cosine for final training. Schedulers step once an epoch."""
        # lazy: Hydra's runtime only when it runs
        from hydra.utils import instantiate

        opt = instantiate(self.hparams.optimizer)(self.parameters())
        if not self.hparams.scheduler:
            return opt
        sched = instantiate(self.hparams.scheduler)(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def lr_scheduler_step(self, scheduler, metric):
        if hasattr(scheduler, "step_update"):  # timm schedulers take the epoch they enter
            scheduler.step(epoch=self.current_epoch + 1)
        else:
            scheduler.step()
