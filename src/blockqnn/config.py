"""Typed schemas of the two entry points' configs (Hydra structured configs).

The values live in ``conf/`` (YAML) only; these dataclasses give them types and ranges.
They are registered in Hydra's ConfigStore as ``search_schema`` and ``train_schema`` and
named first in the defaults lists of ``conf/search.yaml`` and ``conf/train.yaml``, so Hydra
checks every override's type as it composes (``seed=notanumber`` is refused naming ``seed``)
and a key missing from the YAML fails instead of falling back on a value hidden in code.
:func:`check` turns the composed config into these objects, which checks ranges.

Nodes whose keys depend on the chosen option (``data``, ``trainer``, ``executor``,
``logger``, ``evaluator``, ``callbacks``, the agent's ``params``, the optimizer and the
scheduler) are ``_target_`` nodes: their keys are the arguments of their target, checked by
it when it is built (an unknown key is refused there)."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from blockqnn.errors import ConfigError
from blockqnn.space.budget import PARAMETER_FREE

# Keys renamed in this version: the old name is refused with the new one (README "Renamed keys").
RENAMED = {
    "search.async": "search.asynchronous",
    "recipe.optim": "model/optimizer=<adam|sgd> and model.optimizer.* (lr, betas, ...), model.scheduler.* "
    "(step_size, gamma)",
    "train.optim": "model/optimizer=<adam|sgd>, model/scheduler=<step|cosine> and model.optimizer.* / "
    "model.scheduler.*",
}


#: Trainer keys a search sets itself for every candidate (the user sets the rest).
SEARCH_TRAINER_KEYS = (
    "max_epochs",
    "callbacks",
    "logger",
    "enable_checkpointing",
    "enable_progress_bar",
    "enable_model_summary",
    "num_sanity_val_steps",
)


def _range(
    key: str, value: Any, low: float | None = None, high: float | None = None, what: str = ""
) -> None:
    if value is None:
        return
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f">= {low}" if high is None else f"<= {high}" if low is None else f"in {low}..{high}"
        )
        raise ConfigError(f"{key}={value} must be {bounds}{what}")


@dataclass
class SpaceConfig:
    _target_: str = MISSING
    name: str = MISSING
    max_layers: int | None = None  # the NSC space's (space=nsc); unused by space=nb201

    def __post_init__(self):
        _range("space.max_layers", self.max_layers, 1, 64)


@dataclass
class NetworkConfig:
    kind: str = MISSING
    width: int = MISSING
    blocks_per_stage: int = MISSING
    stages: int = MISSING
    drop_path: float = MISSING
    channels_last: bool = MISSING
    params: int | None = MISSING  # a parameter budget (blockqnn.space.budget)
    flops: int | None = MISSING  # or a FLOPs budget
    max_width: int = MISSING
    budget_tolerance: float = MISSING
    parameter_free: str = MISSING  # refuse | allow: a block without parameters at a budget

    def __post_init__(self):
        if self.kind not in ("cifar", "imagenet"):
            raise ConfigError(f"network.kind={self.kind!r} must be cifar or imagenet")
        _range("network.width", self.width, 1)
        _range("network.params", self.params, 1)
        _range("network.flops", self.flops, 1)
        if self.params is not None and self.flops is not None:
            raise ConfigError("set network.params or network.flops, not both")
        _range("network.max_width", self.max_width, 1)
        _range("network.budget_tolerance", self.budget_tolerance, 0.0, 1.0)
        if self.parameter_free not in PARAMETER_FREE:
            raise ConfigError(
                f"network.parameter_free={self.parameter_free!r} must be one of "
                f"{', '.join(PARAMETER_FREE)}"
            )
        _range("network.blocks_per_stage", self.blocks_per_stage, 1)
        _range("network.stages", self.stages, 1, 6)
        _range("network.drop_path", self.drop_path, 0.0, 0.99)


@dataclass
class RestartConfig:
    max: int = MISSING
    factor: float = MISSING
    threshold: float | None = MISSING

    def __post_init__(self):
        _range("recipe.restart.max", self.max, 0)
        _range("recipe.restart.factor", self.factor, 1e-6, 1.0)
        _range("recipe.restart.threshold", self.threshold, 0.0, 1.0)


@dataclass
class RecipeConfig:
    """The proxy training of a search's candidates (the optimizer and scheduler are model.*)."""

    epochs: int = MISSING
    batch_size: int = MISSING
    restart: RestartConfig = MISSING

    def __post_init__(self):
        _range("recipe.epochs", self.epochs, 1)
        _range("recipe.batch_size", self.batch_size, 1)


#: What a reward's first term can measure: the validation accuracy after the proxy training, or
#: its training speed (TSE: the epochs' mean training losses, as 1 - loss / ln(classes)).
REWARD_SIGNALS = ("accuracy", "tse")


@dataclass
class RewardConfig:
    mu: float = MISSING
    rho: float = MISSING
    scale: float = MISSING
    flops_reference: str = MISSING
    signal: str = MISSING  # accuracy | tse: what the reward's first term measures

    def __post_init__(self):
        _range("reward.scale", self.scale, 0.0)
        if self.signal != MISSING and self.signal not in REWARD_SIGNALS:
            raise ConfigError(f"reward.signal={self.signal!r}: one of {', '.join(REWARD_SIGNALS)}")


@dataclass
class ModelConfig:
    optimizer: Any = MISSING  # a _partial_ torch.optim target (conf/model/optimizer)
    scheduler: Any = MISSING  # a _partial_ scheduler target or null (conf/model/scheduler)


@dataclass
class AgentConfig:
    name: str = MISSING
    batch_size: int | None = MISSING  # null: the schedule's own (blockqnn.agent.schedules.NAMED)
    epsilon_schedule: Any = MISSING
    params: Any = MISSING

    def __post_init__(self):
        _range("agent.batch_size", self.batch_size, 1)


@dataclass
class ReevaluateConfig:
    """``search.reevaluate``: the leading blocks trained again with fresh seeds."""

    top: int = MISSING
    repeats: int = MISSING
    every_iteration: bool = MISSING
    max_rounds: int = MISSING

    def __post_init__(self):
        _range("search.reevaluate.top", self.top, 0)
        _range("search.reevaluate.repeats", self.repeats, 0)
        _range("search.reevaluate.max_rounds", self.max_rounds, 1)


@dataclass
class SearchLoopConfig:
    max_episodes: int | None = MISSING
    max_trainings: int | None = MISSING
    asynchronous: bool = MISSING
    predictor: Any = MISSING
    topk: int = MISSING
    max_consecutive_failures: int = MISSING
    max_attempts: int = MISSING
    reevaluate: ReevaluateConfig = MISSING

    def __post_init__(self):
        _range("search.max_episodes", self.max_episodes, 1)
        _range("search.max_trainings", self.max_trainings, 1)
        _range("search.topk", self.topk, 1)
        _range("search.max_consecutive_failures", self.max_consecutive_failures, 1)
        _range("search.max_attempts", self.max_attempts, 1)


@dataclass
class SearchConfig:
    task_name: str = MISSING
    seed: int = MISSING
    space: SpaceConfig = MISSING
    network: NetworkConfig = MISSING
    model: ModelConfig = MISSING
    recipe: RecipeConfig = MISSING
    reward: RewardConfig = MISSING
    agent: AgentConfig = MISSING
    search: SearchLoopConfig = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = MISSING
    evaluator: Any = MISSING
    executor: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


@dataclass
class TrainRecipeConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    label_smoothing: float = MISSING
    ema: float | None = MISSING
    split_seed: int = MISSING
    test: bool = MISSING
    resume: bool = MISSING
    ckpt_path: str | None = MISSING
    export: bool = MISSING

    def __post_init__(self):
        _range("train.epochs", self.epochs, 1)
        _range("train.batch_size", self.batch_size, 1)
        _range("train.label_smoothing", self.label_smoothing, 0.0, 0.99)
        _range("train.ema", self.ema, 0.0, 1.0)


@dataclass
class TrainConfig:
    task_name: str = MISSING
    seed: int = MISSING
    block: Any = MISSING
    network: NetworkConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainRecipeConfig = MISSING
    data: Any = MISSING
    trainer: Any = MISSING
    callbacks: Any = MISSING
    logger: Any = MISSING
    paths: Any = MISSING


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="search_schema", node=SearchConfig)
    cs.store(name="train_schema", node=TrainConfig)


register()


def check(cfg: DictConfig, schema: type) -> Any:
    """Check the ranges of a composed config against ``schema``: its dataclass sections as
    typed objects (the ``Any`` sections stay DictConfigs). Raises ConfigError naming the key."""

    hints = get_type_hints(schema)
    out = {}
    section = ""
    try:
        for f in fields(schema):
            section = f.name
            node = cfg[f.name]
            if is_dataclass(hints[f.name]):
                typed = OmegaConf.merge(
                    OmegaConf.structured(hints[f.name]), OmegaConf.to_container(node, resolve=True)
                )
                out[f.name] = OmegaConf.to_object(typed)
            else:
                out[f.name] = node
    except MissingMandatoryValue as exc:
        raise ConfigError(
            f"{exc.full_key}: no value set (a required key missing from the config)"
        ) from None
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", "") or ""
        if key and section and not key.startswith(section + ".") and key != section:
            key = f"{section}.{key}"  # the merge reports keys relative to the section
        raise ConfigError(f"{key or 'config'}: {msg}") from None
    return out


def build(node: Any, what: str, **kwargs: Any) -> Any:
    """Call a config node's ``_target_`` with its keys and ``kwargs`` (``_partial_`` nodes
    give a functools.partial). Unlike hydra's instantiate this does not recurse into the node
    and lets the project's own errors through unchanged; a wrong or unknown key is a
    ConfigError naming ``what``."""

    args = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    target = args.pop("_target_", None)
    partial = bool(args.pop("_partial_", False))
    try:
        fn = get_object(target)
    except Exception:  # noqa: BLE001
        raise ConfigError(f"{what}._target_={target!r} cannot be imported") from None
    if partial:
        return functools.partial(fn, **args, **kwargs)
    try:
        return fn(**args, **kwargs)
    except TypeError as exc:
        if "argument" in str(exc):
            raise ConfigError(f"{what} ({target}): {exc}") from None
        raise


def refuse_renamed(argv: list[str] | None = None) -> None:
    """Refuse overrides that use a renamed key, with the new name (before Hydra composes)."""
    for arg in sys.argv[1:] if argv is None else argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        for old, new in RENAMED.items():
            if key == old or key.startswith(old + "."):
                print(
                    f"error: {key} was renamed: use {new} (README, 'Renamed keys')", file=sys.stderr
                )
                raise SystemExit(2)


__all__ = ["SearchConfig", "TrainConfig", "build", "check", "refuse_renamed", "RENAMED"]
