"""Full training of a searched block: ``python train.py block=<B> [overrides]`` (see README)."""

import hydra
from omegaconf import DictConfig

from blockqnn.config import refuse_renamed
from blockqnn.cli import run_train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    run_train(cfg)


if __name__ == "__main__":
    refuse_renamed()
    main()
