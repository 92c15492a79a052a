"""A search's set-up from its config: the checks before anything runs (:func:`validate`), the
agent, predictor, executor and logger it builds, its schedule, and the fingerprint a resume
must match (:func:`fingerprint`)."""

from __future__ import annotations

import functools
import hashlib
import inspect
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from blockqnn.agent import Agent, parse_schedule
from blockqnn.config import SEARCH_TRAINER_KEYS, SearchConfig, check
from blockqnn.errors import ConfigError
from blockqnn.evaluator import evaluator_spec, make_evaluator
from blockqnn.search.store import ADDED_KEYS, without_locations
from blockqnn.space.registry import build_space

#: Keys that cannot change a search's results, so they may change between a search and its
#: resumption (README "Resume"): trainer keys about display, logging and where it runs.
NEUTRAL_TRAINER_KEYS = (
    "enable_progress_bar",
    "enable_model_summary",
    "log_every_n_steps",
    "logger",
    "default_root_dir",
    "num_nodes",
    "devices",
    "profiler",
    "barebones",
)


def _network_fingerprint(network: dict) -> dict:
    """The network section as the fingerprint holds it: without a budget
    ``network.parameter_free`` changes nothing and is held at its neutral value (ADDED_KEYS),
    so folders from before the key resume whatever it is set to."""
    if network.get("params") is None and network.get("flops") is None:
        return {**network, "parameter_free": ADDED_KEYS[("network", "parameter_free")]}
    return network


def fingerprint(cfg: DictConfig) -> dict:
    """What must not change between a search and its resumption: every key that changes a
    result (seed, data, recipe, trainer, callbacks, network, model, reward, space, evaluator,
    agent with its resolved iteration size, predictor, re-evaluation; the limits that decide
    which evaluations time out or are tried again: evaluator.timeout_s, evaluator.devices,
    search.max_attempts; a table-backed evaluator's table by its content), resolved. Not in it:
    where things are (data.root, data.download, the table's path: ``UNFINGERPRINTED``), the
    logger, the executor, search.max_episodes, search.max_trainings and the trainer's
    NEUTRAL_TRAINER_KEYS."""
    ev = evaluator_spec(cfg)
    evaluator = {k: v for k, v in ev["evaluator"].items() if k not in ("devices", "timeout_s")}
    trainer = {k: v for k, v in ev["trainer"].items() if k not in NEUTRAL_TRAINER_KEYS}
    return without_locations(
        {
            "seed": ev["seed"],
            "limits": {
                "timeout_s": ev["evaluator"].get("timeout_s"),
                "devices": ev["evaluator"].get("devices"),
                "max_attempts": int(cfg.search.max_attempts),
            },
            "table": _table_digest(ev["evaluator"]),
            "data": ev["data"],
            "recipe": ev["recipe"],
            "network": _network_fingerprint(ev["network"]),
            "model": ev["model"],
            "reward": ev["reward"],
            **space_of(cfg).fingerprint(),  # NSC: max_layers (as before spaces were pluggable)
            "trainer": trainer,
            "callbacks": ev["callbacks"],
            "reevaluate": reevaluate_settings(cfg),
            "asynchronous": bool(cfg.search.asynchronous),
            "evaluator": evaluator,
            "agent": {
                **OmegaConf.to_container(cfg.agent, resolve=True),
                "batch_size": schedule_of(cfg).batch_size,
            },
            "predictor": OmegaConf.to_container(cfg.search.predictor, resolve=True)
            if cfg.search.get("predictor") is not None
            else None,
        }
    )


def _table_digest(evaluator: dict) -> str | None:
    """SHA-256 of a table-backed evaluator's table (the surrogate's: its content, not its
    path); None for evaluators without one."""
    if "table" not in evaluator:
        return None
    # lazy: the surrogate's module only where its table is fingerprinted
    from blockqnn.evaluator.surrogate import DEFAULT_TABLE

    path = Path(evaluator["table"] or DEFAULT_TABLE)
    if not path.is_file():
        return None  # the evaluator refuses a missing table by name
    return _digest(str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)


@functools.cache
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def reevaluate_settings(cfg: DictConfig) -> dict:
    """``search.reevaluate`` as a dict (top, repeats, every_iteration, max_rounds)."""
    node = cfg.search.get("reevaluate")
    out = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    return {
        "top": int(out.get("top") or 0),
        "repeats": int(out.get("repeats") or 0),
        "every_iteration": bool(out.get("every_iteration", False)),
        "max_rounds": int(out.get("max_rounds") or 1),
    }


def schedule_of(cfg: DictConfig):
    """The search's epsilon schedule with its iteration size resolved (``agent.batch_size``, or
    the named schedule's own when null)."""
    return parse_schedule(cfg.agent.epsilon_schedule, cfg.agent.get("batch_size"))


def _instantiate(node: DictConfig, what: str, **kwargs):
    """hydra.utils.instantiate with its failures turned into one ConfigError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"cannot build the {what} from {node.get('_target_')!r}: {cause}"
        ) from None


def space_of(cfg: DictConfig):
    """The search space of the config (``space=``)."""
    return build_space(cfg.get("space"))


def build_agent(cfg: DictConfig):
    agent = _instantiate(cfg.agent.params, "agent", space=space_of(cfg), seed=int(cfg.seed))
    if not isinstance(agent, Agent):
        raise ConfigError(
            f"agent.params._target_={cfg.agent.params._target_!r} is not an agent "
            "(a blockqnn.agent.Agent); agents: qlearning, random, evolution, tpe, replay"
        )
    return agent


def build_predictor(cfg: DictConfig):
    node = cfg.search.get("predictor")
    if node is None:
        return None
    return _instantiate(node, "predictor", seed=int(cfg.seed))


def build_executor(cfg: DictConfig, evaluator=None):
    """The configured executor, given the evaluator spec (or, for the local executor, an
    evaluator object already built, e.g. the one :func:`validate` loaded the data with)."""
    local = str(cfg.executor.get("_target_", "")).endswith("LocalExecutor")
    # Other executors build one evaluator per worker from the spec.
    use = evaluator if (evaluator is not None and local) else evaluator_spec(cfg)
    return _instantiate(cfg.executor, "executor", evaluator=use, _recursive_=False)


def build_logger(cfg: DictConfig, run_dir: Path):
    # Partial: the run's config holds other _target_ nodes that must not be instantiated.
    make = _instantiate(cfg.logger, "logger", _partial_=True)
    try:
        return make(run_dir=str(run_dir), run_config=OmegaConf.to_container(cfg, resolve=True))
    except TypeError as exc:
        raise ConfigError(
            f"cannot build the logger from {cfg.logger.get('_target_')!r}: {exc}"
        ) from None


def _trains(cfg: DictConfig) -> bool:
    """Whether the configured evaluator trains: a surrogate does not, so the trainer section
    does not apply to it and its search starts without importing Lightning."""
    try:
        return bool(getattr(get_class(cfg.evaluator.get("_target_")), "trains", True))
    except Exception:  # noqa: BLE001  a bad target: make_evaluator names it below
        return True


def _check_budget(cfg: DictConfig, trains: bool) -> tuple[str, int] | None:
    """A budget (network.params / network.flops) sizes networks that are trained: refused with
    an evaluator that scores fixed networks (a surrogate fitted at one width, a table)."""
    from blockqnn.space.budget import budget_of  # lazy: the space package imports torch

    budget = budget_of(OmegaConf.to_container(cfg.network, resolve=True))
    if cfg.reward.get("signal") == "tse" and not trains:
        raise ConfigError(
            "reward.signal=tse reads the training losses of a proxy training; "
            f"evaluator._target_={cfg.evaluator.get('_target_')} trains nothing "
            "(use evaluator=lightning, or reward.signal=accuracy)"
        )
    if budget is not None and not trains:
        raise ConfigError(
            f"network.{budget[0]}={budget[1]} sizes the networks that a search trains; "
            f"evaluator._target_={cfg.evaluator.get('_target_')} scores fixed networks "
            "(use evaluator=lightning, or set the budget to null)"
        )
    return budget


def _check_training_parts(cfg: DictConfig) -> None:
    """What every candidate's training builds, built once now on a dummy parameter: a misspelt
    reward reference, optimizer, scheduler or callback key fails here, before any training
    (not as three failed evaluations)."""
    # lazy: torch and Lightning only for searches that train
    import torch

    from blockqnn.evaluator.training import user_callbacks
    from blockqnn.space.presets import preset

    try:
        preset(str(cfg.reward.flops_reference))
    except ConfigError as exc:
        raise ConfigError(f"reward.flops_reference: {exc}") from None
    param = torch.nn.Parameter(torch.zeros(1))
    opt_node = cfg.model.get("optimizer")
    try:
        optimizer = instantiate(opt_node)([param])
    except Exception as exc:  # noqa: BLE001 - any refusal names the key
        raise ConfigError(f"model.optimizer ({opt_node.get('_target_')}): {exc}") from None
    sched_node = cfg.model.get("scheduler")
    if sched_node:
        try:
            instantiate(sched_node)(optimizer)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"model.scheduler ({sched_node.get('_target_')}): {exc}") from None
    try:
        user_callbacks(cfg.callbacks)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"callbacks: {exc}") from None


def device_shared(cfg: DictConfig) -> bool:
    """Whether candidates may share a GPU (pool workers_per_gpu > 1, Ray tasks with a fraction
    of a GPU): an ``oom`` may then be another candidate's doing, so it is tried again (up to
    search.max_attempts) instead of being the block's final result."""
    if cfg.trainer.get("accelerator") not in ("gpu", "cuda"):
        return False
    target = str(cfg.executor.get("_target_", ""))
    if target.endswith("PoolExecutor"):
        return int(cfg.executor.get("workers_per_gpu") or 1) > 1
    if target.endswith("RayExecutor"):
        return 0 < float(cfg.executor.get("num_gpus") or 0) < 1
    return False


def _check_space(cfg: DictConfig) -> None:
    """The evaluator scores the configured space's architectures (``spaces``: the names it
    takes; NSC blocks unless it says otherwise)."""
    space = space_of(cfg).name
    target = cfg.evaluator.get("_target_")
    try:
        spaces = tuple(getattr(get_class(target), "spaces", ("nsc",)))
    except Exception:  # noqa: BLE001  a bad target: make_evaluator names it
        return
    if space not in spaces:
        names = {"nsc": "lightning or surrogate", "nb201": "nb201"}
        raise ConfigError(
            f"space={space} needs evaluator={names.get(space, 'one that scores it')}: "
            f"evaluator._target_={target} scores {', '.join(spaces)} architectures "
            "(experiment=nb201 sets both for NAS-Bench-201)"
        )


def _check_placement(cfg: DictConfig, executor: str) -> None:
    """Executor and DDP settings that cannot work together, refused before anything runs."""
    devices = int(cfg.evaluator.get("devices") or 1)
    if devices <= 1:
        return
    if executor.endswith("PoolExecutor") and cfg.trainer.get("accelerator") in ("gpu", "cuda"):
        raise ConfigError(
            f"evaluator.devices={devices} with executor=pool on GPUs: a pool worker owns one GPU "
            "(workers_per_gpu share it), so a candidate cannot spread over several; use "
            "executor=local (DDP per candidate on this machine's GPUs) or executor=ray with "
            "executor.num_gpus=<devices>"
        )
    gpus = cfg.executor.get("num_gpus")
    if (
        executor.endswith("RayExecutor")
        and cfg.trainer.get("accelerator") in ("gpu", "cuda")
        and float(gpus or 0) < devices
    ):
        raise ConfigError(
            f"evaluator.devices={devices} with executor=ray but executor.num_gpus={gpus}: each "
            f"Ray task must hold the {devices} GPUs its DDP candidate trains on "
            f"(executor.num_gpus={devices})"
        )


def validate(cfg: DictConfig):
    """Refuse bad input before any training: types and ranges (the schema), settings the
    search cannot honour, the agent, and the data (loaded here: a missing folder fails now).
    Returns the evaluator it built, for the local executor to use."""
    check(cfg, SearchConfig)
    target = cfg.executor.get("_target_")
    try:
        get_class(target)
    except Exception:  # noqa: BLE001
        raise ConfigError(
            f"executor._target_={target!r} cannot be imported; executors: local, pool, ray"
        ) from None
    known = set(inspect.signature(get_class(target)).parameters) - {"evaluator"}
    unknown = sorted(set(cfg.executor) - known - {"_target_"})
    if unknown:
        raise ConfigError(
            f"executor.{unknown[0]} is not an argument of {target}; its arguments: "
            + ", ".join(sorted(known))
        )
    schedule_of(cfg)
    trains = _trains(cfg)  # the surrogate trains nothing: no trainer section, no device
    trainer_target = cfg.trainer.get("_target_")
    if trainer_target and trains:  # locating the Trainer imports Lightning (seconds)
        accepted = set(inspect.signature(get_class(trainer_target)).parameters)
        stray = sorted(set(cfg.trainer) - accepted - {"_target_"})
        if stray:
            raise ConfigError(f"trainer.{stray[0]} is not an argument of {trainer_target}")
    owned = [k for k in SEARCH_TRAINER_KEYS if k in cfg.trainer]
    if owned:
        raise ConfigError(
            f"trainer.{owned[0]} is set by the search for every candidate "
            "(max_epochs: recipe.epochs; callbacks: callbacks=...); remove it"
        )
    if (
        cfg.trainer.get("strategy") not in (None, "auto")
        or int(cfg.trainer.devices) != 1
        or int(cfg.trainer.get("num_nodes") or 1) != 1
    ):
        raise ConfigError(
            "a search trains each candidate on trainer.devices=1; for DDP per candidate use "
            "evaluator.devices=<k> (each candidate then runs as its own torchrun process group)"
        )
    build_agent(cfg)
    _check_space(cfg)
    budget = _check_budget(cfg, trains)
    if trains:
        _check_training_parts(cfg)
    _check_placement(cfg, str(target))
    if reevaluate_settings(cfg)["every_iteration"] and cfg.search.asynchronous:
        raise ConfigError(
            "search.reevaluate.every_iteration=true needs synchronous iterations "
            "(search.asynchronous=false): an asynchronous search has no iteration boundary"
        )
    spec = evaluator_spec(cfg)
    local = str(target).endswith("LocalExecutor")
    if not local and "trainer" in spec:
        # Workers build their own evaluators: the master checks the data on the CPU and keeps
        # nothing (no data set, no CUDA memory in the master).
        spec = {**spec, "trainer": {**spec["trainer"], "accelerator": "cpu"}}
    evaluator = make_evaluator(spec)
    if (
        trains
        and cfg.trainer.accelerator in ("gpu", "cuda")
        and str(target).endswith(("LocalExecutor", "PoolExecutor"))
    ):
        # lazy: torch stays out of this light module's import (master, CLI start-up)
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={cfg.trainer.accelerator} but no GPU is visible here; "
                "use trainer=cpu (or run where a GPU is)"
            )
    prepare = getattr(evaluator, "prepare", None)
    if prepare is not None:
        prepare()
    if budget is not None:  # the reward's reference network must fit the budget too
        from blockqnn.space.budget import OverBudget  # lazy: its counts import torch

        try:
            evaluator.reference_flops()
        except OverBudget as exc:
            raise ConfigError(
                f"reward.flops_reference={cfg.reward.flops_reference}: {exc}; raise the budget"
            ) from None
    return evaluator if local else None
