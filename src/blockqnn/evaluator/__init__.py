"""Evaluators: what turns a sampled block into a result (``evaluator=`` in the config).

:func:`make_evaluator` builds the configured one from the run's config; executors call it
once per worker and then call the evaluator with each block."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from blockqnn.errors import ConfigError

#: The sections of the run config an evaluator reads (what the executors ship to workers).
#: evaluator.timeout_s when evaluator.devices > 1 and it is null: 4 hours (the paper's
#: 12-epoch proxy trained in about 12 GPU-minutes a block).
DDP_DEFAULT_TIMEOUT_S = 4 * 3600.0

RUN_KEYS = (
    "seed",
    "data",
    "recipe",
    "trainer",
    "callbacks",
    "network",
    "model",
    "reward",
    "evaluator",
)


def evaluator_spec(cfg: DictConfig) -> dict[str, Any]:
    """The picklable, JSON-able part of the run config an evaluator is built from."""
    return {
        k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in RUN_KEYS
    }


def make_evaluator(spec: dict[str, Any]):
    """The evaluator of ``spec["evaluator"]`` (its ``_target_`` and arguments), given the run."""
    # lazy: Hydra's runtime only when it runs
    from hydra.utils import get_class

    node = dict(spec["evaluator"])
    target = node.pop("_target_", None)
    try:
        cls = get_class(target)
    except Exception:  # noqa: BLE001
        raise ConfigError(
            f"evaluator._target_={target!r} cannot be imported; evaluators: lightning, surrogate"
        ) from None
    try:
        return cls(run=OmegaConf.create(spec), **node)
    except TypeError as exc:
        raise ConfigError(f"evaluator ({target}): {exc}") from None


__all__ = ["RUN_KEYS", "evaluator_spec", "make_evaluator"]
