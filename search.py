"""BlockQNN search: ``python search.py [overrides]`` (see README.md and conf/search.yaml)."""

import hydra
from omegaconf import DictConfig

from blockqnn.config import refuse_renamed
from blockqnn.cli import run_search


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> None:
    run_search(cfg)


if __name__ == "__main__":
    refuse_renamed()
    main()
