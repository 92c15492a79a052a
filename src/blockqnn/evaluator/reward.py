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

# One RewardConfig: the typed schema of the config's ``reward`` section (its values live in
# conf/ only; every field is required, so no default here can contradict the YAML).
from blockqnn.config import RewardConfig  # noqa: F401  (re-exported: the reward's settings)


def shaped_reward(
    accuracy: float, flops: float, flops_ref: float, density: float, cfg: RewardConfig
) -> float:
    """The shaped reward of a first term ``accuracy`` (the validation accuracy, or with
    ``reward.signal=tse`` :func:`tse_signal`)."""
    flops_term = math.log(max(flops, 1.0) / max(flops_ref, 1.0))
    return accuracy - cfg.scale * (cfg.mu * flops_term + cfg.rho * math.log(density))


def tse_signal(losses: list[float], num_classes: int) -> float:
    """``reward.signal=tse``: 1 - (the mean over the proxy's epochs of each epoch's mean
    training loss) / ln(classes). A monotone reading of TSE (Ru et al., NeurIPS 2021: the sum
    of training losses ranks blocks better than early validation accuracy), 0 at chance-level
    loss and 1 at zero loss, so it sits on the accuracy's scale beside q_init."""
    return 1.0 - (sum(losses) / len(losses)) / math.log(num_classes)
