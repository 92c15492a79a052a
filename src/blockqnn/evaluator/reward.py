"""The paper's early-stop shaped reward (BLOCKQNN.md section 6).

    reward = accuracy - scale * (mu * log(FLOPs / FLOPs_ref) + rho * log(Density))

* ``accuracy`` is the validation accuracy (a fraction) after the early-stop training.
* The papers' constants mu = 1 and rho = 8 are for accuracy in percent: a log-ratio of a few
  units then shifts the reward by a few percentage points. We keep accuracy as a fraction (so
  rewards sit in [0, 1] beside the initial Q value 0.5) and multiply the penalty by
  ``scale`` = 0.01, which is the same correction expressed in fractions.
* FLOPs normalisation [ours]: FLOPs_ref is the cost of the same network built from the
  ``plain`` block (one 3x3 convolution) at the same input size. The log then measures how many
  times more expensive a block is than the simplest convolutional block: 0 for it, about 2.3
  for a block ten times its cost (penalty 0.023 at mu = 1). With raw FLOPs in the log the term
  would be ~18-20 for every block (an offset of 0.2 that swamps accuracy differences and
  depends on the input size); with the ratio it is a correction, as the paper intends.
* Density is edges / nodes of the block's DAG (see :attr:`Block.density`): 1 for a chain, so
  the density penalty is 0 for chains and at most 8 * log 2 * 0.01 = 0.055.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning as L


@dataclass(frozen=True)
class RewardConfig:
    mu: float = 1.0
    rho: float = 8.0
    scale: float = 0.01
    flops_reference: str = "plain"


def shaped_reward(accuracy: float, flops: float, flops_ref: float, density: float, cfg: RewardConfig) -> float:
    flops_term = math.log(max(flops, 1.0) / max(flops_ref, 1.0))
    return accuracy - cfg.scale * (cfg.mu * flops_term + cfg.rho * math.log(density))


class ShapedRewardCallback(L.Callback):
    """Tracks validation accuracy per epoch and computes the shaped reward at the end of
    the proxy training (``self.reward``, ``self.accuracy``)."""

    def __init__(self, flops: float, flops_ref: float, density: float, cfg: RewardConfig):
        self.flops, self.flops_ref, self.density, self.cfg = flops, flops_ref, density, cfg
        self.history: list[float] = []
        self.accuracy: float | None = None
        self.reward: float | None = None

    # Validation runs inside the training epoch, so its accuracy is known at the epoch's end
    # (a callback's on_validation_epoch_end runs before the module has logged it).
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            self.history.append(float(acc))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history:
            self.accuracy = self.history[-1]
            self.reward = shaped_reward(self.accuracy, self.flops, self.flops_ref, self.density, self.cfg)


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
