"""blockqnn: block-wise neural architecture search with Q-learning (BlockQNN)."""

__version__ = "0.1.0"
from blockqnn import config as _config  # noqa: E402,F401  registers the config schemas with Hydra
