"""The Lightning callbacks of a candidate's proxy training: the shaped reward at the end
(:mod:`blockqnn.evaluator.reward` holds the formula, importable without Lightning) and the
restart rule at chance accuracy."""

from __future__ import annotations

import lightning as L

from blockqnn.evaluator.reward import RewardConfig, shaped_reward, tse_signal


class ShapedRewardCallback(L.Callback):
    """Tracks validation accuracy per epoch and computes the shaped reward at the end of
    the proxy training (``self.reward``, ``self.accuracy``)."""

    def __init__(
        self,
        flops: float,
        flops_ref: float,
        density: float,
        cfg: RewardConfig,
        num_classes: int | None = None,
    ):
        self.flops, self.flops_ref, self.density, self.cfg = flops, flops_ref, density, cfg
        self.num_classes = num_classes  # for reward.signal=tse
        self.history: list[float] = []
        self.losses: list[float] = []  # each epoch's mean training loss (their sum: TSE)
        self.accuracy: float | None = None
        self.reward: float | None = None

    # Validation runs inside the training epoch, so its accuracy is known at the epoch's end
    # (a callback's on_validation_epoch_end runs before the module has logged it).
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            self.history.append(float(acc))
        # Callbacks run before the module's own epoch-end hook logs train/loss: ask the module.
        loss = pl_module.epoch_train_loss() if hasattr(pl_module, "epoch_train_loss") else None
        if loss is not None:
            self.losses.append(loss)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history:
            self.accuracy = self.history[-1]
            signal = (
                tse_signal(self.losses, int(self.num_classes))
                if self.cfg.signal == "tse" and self.losses
                else self.accuracy
            )
            self.reward = shaped_reward(signal, self.flops, self.flops_ref, self.density, self.cfg)


class ChanceRestartCallback(L.Callback):
    """The search recipe's restart rule: if the accuracy after the first epoch is no better
    than ``threshold`` (chance, 1 / classes, by default), stop so the evaluator restarts the
    training with a lower learning rate."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.triggered = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != 0:
            return
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None and float(acc) <= self.threshold:
            self.triggered = True
            trainer.should_stop = True
