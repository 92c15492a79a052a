"""The Lightning evaluator (``evaluator=lightning``): a per-worker object that holds the
search's data and trains each candidate it is given with the search recipe.

Each worker (the search process itself, a pool worker, a Ray worker process) builds one from
the run's config and keeps it: the data are loaded once per worker, and nothing of a
candidate (its model, its Trainer) outlives its evaluation."""

from __future__ import annotations

import os
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from blockqnn.config import build
from blockqnn.data.modules import store_as
from blockqnn.errors import ConfigError
from blockqnn.evaluator import DDP_DEFAULT_TIMEOUT_S
from blockqnn.evaluator.ddp import evaluate_ddp
from blockqnn.evaluator.training import train_candidate
from blockqnn.result import evaluation_seed
from blockqnn.space.budget import resolve as resolve_budget
from blockqnn.space.cost import network_cost
from blockqnn.space.presets import preset


class LightningEvaluator:
    """``evaluator(nsc) -> result``. ``devices`` > 1 trains each candidate with DDP on that
    many devices (a torchrun process group per candidate); ``timeout_s`` bounds one
    evaluation (the result is then ``timeout``)."""

    def __init__(self, run: DictConfig | dict, devices: int, timeout_s: float | None):
        self.run = run if isinstance(run, DictConfig) else OmegaConf.create(run)
        if int(devices) < 1:
            raise ConfigError(f"evaluator.devices={devices} must be at least 1")
        if timeout_s is not None and float(timeout_s) <= 0:
            raise ConfigError(f"evaluator.timeout_s={timeout_s} must be positive or null")
        self.devices = int(devices)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        if self.devices > 1 and self.timeout_s is None:
            # A DDP candidate whose rank dies can leave the others waiting on a collective until
            # the backend's own timeout; a search must not wait with them for ever.
            self.timeout_s = DDP_DEFAULT_TIMEOUT_S
        self._dm = None
        self._ref_flops: int | None = None

    # ------------------------------------------------------------------ data
    @property
    def device(self) -> str:
        """Where the data is held: the training device, except in the process that launches
        DDP candidates (devices > 1, outside torchrun): it trains nothing itself, so its copy of
        the data (checked at start-up, used for shapes) stays on the CPU, off cuda:0."""
        if self.devices > 1 and os.environ.get("LOCAL_RANK") is None:
            return "cpu"
        if str(self.run.trainer.accelerator) in ("gpu", "cuda"):
            rank = os.environ.get("LOCAL_RANK")
            return f"cuda:{rank}" if rank is not None else "cuda"
        return "cpu"

    @property
    def datamodule(self):
        """The search's data (train and validation splits), loaded on first use."""
        if self._dm is None:
            self._dm = store_as(
                build(
                    self.run.data,
                    "data",
                    batch_size=int(self.run.recipe.batch_size),
                    seed=int(self.run.seed),
                    device=self.device,
                ),
                bool(self.run.network.get("channels_last", False)),
            )
            self._dm.setup("fit")
        return self._dm

    def prepare(self) -> None:
        """Load the data now (the search calls it before anything else: bad data fail early)."""
        _ = self.datamodule

    def network_spec(self) -> dict[str, Any]:
        c, h, _ = self.datamodule.shape
        return {
            **OmegaConf.to_container(self.run.network, resolve=True),
            "num_classes": self.datamodule.num_classes,
            "in_channels": c,
            "input_size": h,
        }

    def reference_flops(self) -> int:
        """FLOPs of the network built from the reward's reference block (once per worker)."""
        if self._ref_flops is None:
            ref = preset(str(self.run.reward.flops_reference))
            self._ref_flops = network_cost(ref, **resolve_budget(ref, self.network_spec())[0])[0]
        return self._ref_flops

    # ------------------------------------------------------------------ evaluation
    def __call__(self, nsc: Any, repeat: int = 0) -> dict[str, Any]:
        """Train ``nsc``; ``repeat`` > 0: a re-evaluation, trained under a fresh seed
        (:func:`blockqnn.result.evaluation_seed`) on the same data split."""

        seed = evaluation_seed(int(self.run.seed), repeat)
        if self.devices > 1:
            start = time.perf_counter()
            run = OmegaConf.to_container(self.run, resolve=True)
            result = evaluate_ddp(nsc, {**run, "eval_seed": seed}, self.devices, self.timeout_s)
            result["wall_time"] = time.perf_counter() - start
            return result

        return train_candidate(
            nsc,
            self.run,
            self.datamodule,
            self.network_spec(),
            self.reference_flops,
            self.timeout_s,
            seed=seed,
        )
