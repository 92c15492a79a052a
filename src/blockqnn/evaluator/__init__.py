"""The evaluator: Lightning training of a sampled block and its shaped reward."""

from blockqnn.evaluator.proxy import evaluate, resolve_config

__all__ = ["evaluate", "resolve_config"]
