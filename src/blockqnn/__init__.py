"""blockqnn: block-wise neural architecture search with Q-learning (BlockQNN)."""

__version__ = "0.1.0"
