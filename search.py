"""BlockQNN search: ``python search.py [overrides]`` (see README.md and conf/search.yaml)."""

import hydra
from omegaconf import DictConfig

from blockqnn.cli import run_search
from blockqnn.config import refuse_renamed


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> float | None:
    """Returns the best block's reward (its mean over its evaluations): the objective a Hydra
    sweeper (Optuna, Ax) optimises over the agent's or the proxy's settings."""
    best = run_search(cfg)
    return float(best["reward"]) if best else None


if __name__ == "__main__":
    refuse_renamed()
    main()
