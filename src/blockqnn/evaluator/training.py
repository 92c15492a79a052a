"""Trains one candidate with the search recipe under a Lightning Trainer and returns its
result (:mod:`blockqnn.result`). Used in-process by :class:`LightningEvaluator` and by each
rank of a DDP candidate (:mod:`blockqnn.evaluator.ddp`).

Only the candidate's own faults become results here (an invalid block, a diverged loss,
running out of memory, the time limit); any other exception propagates: it is a bug, and the
executor records it as ``failed`` with its traceback."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from blockqnn.config import SEARCH_TRAINER_KEYS  # noqa: F401  (re-exported: the keys a search owns)
from blockqnn.errors import BlockError
from blockqnn.evaluator.callbacks import ChanceRestartCallback, ShapedRewardCallback
from blockqnn.evaluator.module import BlockClassifier, DivergedError
from blockqnn.evaluator.reward import RewardConfig
from blockqnn.result import empty_result
from blockqnn.space.budget import OverBudget, ParameterFree
from blockqnn.space.budget import resolve as resolve_budget
from blockqnn.space.cost import network_cost
from blockqnn.space.nsc import Block


class CandidateTimeout(Exception):
    """The candidate's training ran past ``evaluator.timeout_s``."""


class TimeLimit(L.Callback):
    """Stops a training that runs past ``seconds`` (checked after every batch)."""

    def __init__(self, seconds: float, start: float):
        self.seconds, self.start = float(seconds), start

    def _check(self) -> None:
        if time.perf_counter() - self.start > self.seconds:
            raise CandidateTimeout(
                f"the evaluation ran past evaluator.timeout_s={self.seconds:g} s"
            )

    def on_train_batch_end(self, *args: Any) -> None:
        self._check()

    def on_validation_batch_end(self, *args: Any) -> None:
        self._check()


def quiet_lightning() -> None:
    """Lightning's info logs and its advice about DataLoader workers and iterable datasets do
    not apply to in-memory tensor loaders; each is filtered by its message."""

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*isn't an iterable-style.*")
    # Lightning 2.x calls a torch pytree API that torch 2.14 deprecates, once per candidate.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning
    )


def user_callbacks(node) -> list:
    """The Lightning callbacks of a ``callbacks`` config node (callbacks=..., both entry points)."""
    # lazy: Hydra's runtime only when it runs
    # lazy: Hydra's runtime only when it runs
    from hydra.utils import instantiate

    return [instantiate(c) for c in (node or {}).values() if c is not None]


def build_trainer(
    run: DictConfig, max_epochs: int, callbacks: list, devices: int | None = None
) -> L.Trainer:
    """The candidate's Trainer from ``run.trainer`` (every key the user set), with the keys a
    search owns; user callbacks (``run.callbacks``) are added to the search's own."""
    # lazy: Hydra's instantiate only where a config node is built
    from hydra.utils import instantiate

    node = OmegaConf.to_container(run.trainer, resolve=True)
    if devices is not None:
        node["devices"] = devices
    return instantiate(
        node,
        max_epochs=max_epochs,
        callbacks=callbacks + user_callbacks(run.callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def train_candidate(
    nsc: Any,
    run: DictConfig,
    dm,
    network: dict,
    reference_flops: Callable[[], int],
    timeout_s: float | None = None,
    devices: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Train the network built from ``nsc`` on ``dm`` with ``run``'s recipe; its result.
    ``seed``: the training seed (default ``run.seed``; re-evaluations pass fresh ones). It seeds
    the weights and the training data's order and augmentation draws (``dm.order_seed``): every
    first training of a search sees the same data order (blocks compare on equal terms), and a
    re-evaluation is fresh in both (Bouthillier et al., MLSys 2021: both are seed noise)."""

    start = time.perf_counter()
    quiet_lightning()
    out: dict[str, Any] = {}
    try:
        block = Block.parse(nsc)
    except BlockError as exc:
        return empty_result(
            "invalid", f"invalid block: {exc}", wall_time=time.perf_counter() - start
        )
    out["density"] = block.density
    try:  # a budget (network.params / flops): this block's stage widths
        network, fit = resolve_budget(block, network)
    except (OverBudget, ParameterFree) as exc:
        return empty_result(
            "invalid", str(exc), density=block.density, wall_time=time.perf_counter() - start
        )
    if fit is not None:
        out["widths"] = list(fit.widths)
    recipe = run.recipe
    restart = recipe.restart
    threshold = (
        1.0 / network["num_classes"] if restart.threshold is None else float(restart.threshold)
    )
    optimizer = OmegaConf.to_container(run.model.optimizer, resolve=True)
    scheduler = (
        OmegaConf.to_container(run.model.scheduler, resolve=True) if run.model.scheduler else None
    )
    base_lr = float(optimizer["lr"])
    reward_cfg = RewardConfig(**OmegaConf.to_container(run.reward, resolve=True))
    if hasattr(dm, "order_seed"):
        dm.order_seed = int(run.seed) if seed is None else int(seed)
    try:
        for attempt in range(int(restart.max) + 1):
            L.seed_everything(
                int(run.seed) if seed is None else int(seed), workers=False, verbose=False
            )
            lr = base_lr * float(restart.factor) ** attempt
            model = BlockClassifier(block.to_list(), network, {**optimizer, "lr": lr}, scheduler)
            if "flops" not in out:  # from the NSC: equal to torch's counts, without a forward pass
                flops, params = network_cost(block, **network)
                out.update(flops=flops, params=params)
            reward_cb = ShapedRewardCallback(
                out["flops"], reference_flops(), block.density, reward_cfg, network["num_classes"]
            )
            restart_cb = ChanceRestartCallback(threshold)
            callbacks: list = [reward_cb] + ([restart_cb] if attempt < int(restart.max) else [])
            if timeout_s:
                callbacks.append(TimeLimit(timeout_s, start))
            trainer = build_trainer(run, int(recipe.epochs), callbacks, devices)
            trainer.fit(model, datamodule=dm)
            out["epochs"] = trainer.current_epoch
            out["history"] = reward_cb.history
            out["train_loss"] = reward_cb.losses
            out["lr"] = lr
            if not restart_cb.triggered:
                break
            out["restarts"] = attempt + 1
    except DivergedError as exc:
        return empty_result(
            "diverged", str(exc), **_sizes(out), wall_time=time.perf_counter() - start
        )
    except CandidateTimeout as exc:
        return empty_result(
            "timeout", str(exc), **_sizes(out), wall_time=time.perf_counter() - start
        )
    except torch.OutOfMemoryError as exc:
        _free_cuda()
        size = (
            f"{out.get('params')} parameters, {out.get('flops')} FLOPs"
            if out.get("params")
            else "size unknown"
        )
        return empty_result(
            "oom",
            f"out of memory ({size}): {str(exc).splitlines()[0]}",
            **_sizes(out),
            wall_time=time.perf_counter() - start,
        )
    if reward_cb.accuracy is None:
        raise RuntimeError("the training ended without a validation accuracy")
    return empty_result(
        "ok",
        None,
        **out,
        accuracy=reward_cb.accuracy,
        reward=reward_cb.reward,
        wall_time=time.perf_counter() - start,
    )


def _sizes(out: dict) -> dict:
    return {k: out[k] for k in ("flops", "params", "density", "widths") if k in out}


def _free_cuda() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
