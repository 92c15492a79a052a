"""Full training of a searched block: ``python train.py block=<B> [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig

from blockqnn.cli import run_train
from blockqnn.config import refuse_renamed


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the validation accuracy: the objective a Hydra sweeper (Optuna, Ax) optimises
    (hparams_search=...). Never the test accuracy: tuning on the test set would overfit it."""
    metrics = run_train(cfg)
    return float(metrics["val_acc"]) if metrics and metrics.get("val_acc") is not None else None


if __name__ == "__main__":
    refuse_renamed()
    main()
