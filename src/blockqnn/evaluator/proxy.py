"""Proxy evaluation: train a sampled block briefly under Lightning and return its shaped
reward as a plain, picklable, JSON-able dict. One bad block never stops a search: every
exception becomes a ``failed`` result and a non-finite loss a ``diverged`` one."""

from __future__ import annotations

import logging
import os
import time
import traceback
import warnings
from typing import Any

from blockqnn.errors import BlockError

STATUSES = ("ok", "diverged", "failed")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "digits", "val_fraction": 0.2},
    "recipe": {
        "epochs": 3,
        "batch_size": 64,
        "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "lr_step": 5, "lr_gamma": 0.2},
        "restart": {"max": 3, "factor": 0.4, "threshold": None},
    },
    "trainer": {"accelerator": "cpu", "devices": 1, "precision": "32-true", "deterministic": True},
    "network": {"kind": "cifar", "width": 16, "blocks_per_stage": 1, "stages": 3},
    "reward": {"mu": 1.0, "rho": 8.0, "scale": 0.01, "flops_reference": "plain"},
}

_DATA_CACHE: dict[str, Any] = {}


def _merge(base: dict, over: dict | None) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(cfg: dict | None) -> dict:
    """The evaluator config with defaults filled in (plain dicts only)."""
    return _merge(DEFAULTS, cfg)


def datamodule_for(cfg: dict):
    """The data module of a config, cached per process: every candidate of a search sees the
    same validation split, and data are loaded once per worker."""
    import json

    from blockqnn.data.modules import build_datamodule

    device = "cuda" if cfg["trainer"]["accelerator"] in ("gpu", "cuda") else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per DDP rank
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    key = json.dumps([cfg["data"], cfg["recipe"]["batch_size"], cfg["seed"], device], sort_keys=True, default=str)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        dm = build_datamodule(cfg["data"], cfg["recipe"]["batch_size"], cfg["seed"], device=device)
        dm.setup("fit")
        _DATA_CACHE[key] = dm
    return _DATA_CACHE[key]


def network_spec(cfg: dict, dm) -> dict:
    c, h, _ = dm.shape
    return {**cfg["network"], "num_classes": dm.num_classes, "in_channels": c, "input_size": h}


def _arch(spec: dict) -> dict:
    """The spec without the settings that do not change the architecture."""
    return {k: v for k, v in spec.items() if k != "channels_last"}


def _quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*isn't an iterable-style.*")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")


def empty_result(status: str = "failed", error: str | None = None, **values: Any) -> dict[str, Any]:
    """A result with every field of :func:`evaluate`'s, reward 0 unless given."""
    return {"status": status, "reward": 0.0, "accuracy": None, "flops": None, "params": None, "density": None,
            "epochs": 0, "restarts": 0, "wall_time": 0.0, "error": error, "history": [], **values}


def evaluate(nsc: Any, cfg: dict | None = None) -> dict[str, Any]:
    """Train the network built from ``nsc`` with the search recipe and return its result:
    ``status, reward, accuracy, flops, params, density, epochs, restarts, wall_time, error``
    (plus the per-epoch validation accuracies in ``history``)."""
    start = time.perf_counter()
    result = empty_result()
    try:
        cfg = resolve_config(cfg)
        devices = int(cfg.get("evaluator", {}).get("devices", 1))
        if devices > 1 and not cfg.get("ddp_child"):
            from blockqnn.evaluator.ddp import evaluate_ddp

            sub = evaluate_ddp(nsc, {k: v for k, v in cfg.items() if k != "evaluator"}, devices)
            sub["wall_time"] = time.perf_counter() - start
            return sub
        result.update(_train(nsc, cfg))
    except BlockError as exc:
        result["error"] = f"invalid block: {exc}"
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate is recorded, not raised
        from blockqnn.evaluator.module import DivergedError

        if isinstance(exc, DivergedError):
            result.update(status="diverged", reward=0.0, error=str(exc))
        else:
            tail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            result["error"] = tail[-2000:]
            _free_cuda()
    result["wall_time"] = time.perf_counter() - start
    return result


def _free_cuda() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


_REF_FLOPS: dict[str, int] = {}


def _reference_flops(name: str, spec: dict, shape: tuple) -> int:
    """FLOPs of the network built from the reference block (cached per process)."""
    import json

    from blockqnn.space.cost import count_flops
    from blockqnn.space.network import build_network
    from blockqnn.space.presets import preset

    key = json.dumps([name, spec, list(shape)], sort_keys=True)
    if key not in _REF_FLOPS:
        _REF_FLOPS[key] = count_flops(build_network(preset(name), **spec), shape)
    return _REF_FLOPS[key]


def _train(nsc: Any, cfg: dict) -> dict[str, Any]:
    import lightning as L

    from blockqnn.evaluator.module import BlockClassifier
    from blockqnn.evaluator.reward import ChanceRestartCallback, RewardConfig, ShapedRewardCallback
    from blockqnn.space.cost import count_flops, count_params
    from blockqnn.space.nsc import Block

    _quiet()
    block = Block.parse(nsc)
    dm = datamodule_for(cfg)
    spec = network_spec(cfg, dm)
    reward_cfg = RewardConfig(**cfg["reward"])
    shape = dm.shape
    out: dict[str, Any] = {"density": block.density}
    recipe = cfg["recipe"]
    restart = recipe["restart"]
    threshold = restart.get("threshold")
    threshold = 1.0 / spec["num_classes"] if threshold is None else float(threshold)
    lr = float(recipe["optim"]["lr"])
    flops = flops_ref = None
    for attempt in range(int(restart["max"]) + 1):
        L.seed_everything(int(cfg["seed"]), workers=False, verbose=False)
        model = BlockClassifier(block.to_list(), spec, {**recipe["optim"], "lr": lr})
        if flops is None:
            flops = count_flops(model.net, shape)
            flops_ref = _reference_flops(reward_cfg.flops_reference, _arch(spec), shape)
            out.update(flops=flops, params=count_params(model.net))
        reward_cb = ShapedRewardCallback(flops, flops_ref, block.density, reward_cfg)
        restart_cb = ChanceRestartCallback(threshold)
        callbacks = [reward_cb] + ([restart_cb] if attempt < int(restart["max"]) else [])
        trainer = L.Trainer(
            max_epochs=int(recipe["epochs"]),
            accelerator=cfg["trainer"]["accelerator"],
            devices=cfg["trainer"]["devices"],
            precision=cfg["trainer"]["precision"],
            deterministic=cfg["trainer"].get("deterministic", False),
            strategy=cfg["trainer"].get("strategy") or "auto",
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(model, datamodule=dm)
        out["epochs"] = trainer.current_epoch
        out["history"] = reward_cb.history
        if not restart_cb.triggered:
            break
        out["restarts"] = attempt + 1
        lr *= float(restart["factor"])
    out.update(status="ok", accuracy=reward_cb.accuracy, reward=reward_cb.reward, lr=lr)
    return out
