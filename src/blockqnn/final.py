"""Full training of the final network from one block (``python train.py block=<B>``):
train under Lightning (DDP and bf16 where configured), test on the test split at the end,
write metrics.json, a checkpoint, and TorchScript and ONNX exports with the block's JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from blockqnn.errors import BlockError, BlockQNNError, ConfigError
from blockqnn.space.nsc import Block
from blockqnn.space.presets import PRESETS, preset


class CheckpointError(BlockQNNError):
    """A checkpoint that is missing, unreadable or for another block."""


def resolve_block(spec: Any) -> Block:
    """A block from a preset name, a path to a block JSON file (a search's best_block.json
    works as is: its "nsc" entry is used) or an inline NSC list."""
    if isinstance(spec, (ListConfig, DictConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, (list, tuple)):
        return Block.parse(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"block={spec!r}: give a preset ({', '.join(PRESETS)}), a block JSON file or an NSC list")
    text = spec.strip()
    if text.startswith("["):
        return Block.parse(text)
    if text in PRESETS:
        return preset(text)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BlockError(f"{path} is not valid JSON ({exc.msg} at char {exc.pos})", None, "json") from None
        if isinstance(data, dict):
            if "nsc" not in data:
                raise BlockError(f"{path} has no 'nsc' entry", None, "format")
            data = data["nsc"]
        return Block.parse(data)
    if "/" in text or text.endswith(".json"):
        raise ConfigError(f"block={text}: no such file")
    raise ConfigError(f"block={text!r} is not a preset, a file or an NSC list; presets: {', '.join(PRESETS)}")


class EMACallback(L.Callback):
    """An exponential moving average of the weights (timm's ModelEmaV3), swapped in before
    the final test and the exports."""

    def __init__(self, decay: float):
        self.decay = decay
        self.ema = None

    def on_fit_start(self, trainer, pl_module):
        from timm.utils import ModelEmaV3

        if self.ema is None:
            self.ema = ModelEmaV3(pl_module.net, decay=self.decay)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ema.update(pl_module.net, step=trainer.global_step)

    def state_dict(self):
        return {"ema": self.ema.module.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state):
        self._pending = state.get("ema")

    def on_train_start(self, trainer, pl_module):
        pending = getattr(self, "_pending", None)
        if pending is not None:
            self.ema.module.load_state_dict(pending)
            self._pending = None

    def apply(self, pl_module):
        if self.ema is not None:
            pl_module.net.load_state_dict(self.ema.module.state_dict())


class Throughput(L.Callback):
    """Training images per second of this run (all ranks), validation excluded."""

    def __init__(self):
        self.images, self.seconds, self._t = 0, 0.0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._t
        self.images += int(batch[0].shape[0]) * trainer.world_size

    @property
    def rate(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


def _lightning_logger(cfg: DictConfig, run_dir: Path, block: Block):
    target = str(cfg.logger.get("_target_", ""))
    if target.endswith("WandbLogger"):
        from lightning.pytorch.loggers import WandbLogger

        from blockqnn.search.loggers import run_id, wandb_mode

        mode = wandb_mode(cfg.logger.get("mode"))
        return WandbLogger(project=cfg.logger.get("project", "blockqnn"), save_dir=str(run_dir),
                           id=run_id(run_dir, "bqt"), offline=(mode == "offline"), resume="allow",
                           name=f"train {block.key[:8]}",
                           config=OmegaConf.to_container(cfg, resolve=True))
    if target.endswith("CSVLogger"):
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    return False


def check_checkpoint(path: Path, block: Block) -> None:
    """Refuse a missing checkpoint, or one written for another block."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"checkpoint {path} cannot be read with weights_only=True: {exc}") from None
    nsc = (ckpt.get("hyper_parameters") or {}).get("nsc")
    if nsc is None:
        raise CheckpointError(f"checkpoint {path} was not written by blockqnn (no block in its hyperparameters)")
    if Block.parse(nsc).key != block.key:
        raise CheckpointError(f"checkpoint {path} is for block {json.dumps(nsc)}, not {block.to_json()}")


def export(model, example: torch.Tensor, run_dir: Path, block: Block) -> dict[str, str]:
    """TorchScript and ONNX exports of the network, with the block's JSON beside them."""
    import logging

    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export"):
        logging.getLogger(name).setLevel(logging.WARNING)
    net = model.net.eval().cpu()
    example = example.cpu()
    out = {}
    with torch.no_grad():
        traced = torch.jit.trace(net, example)
    ts = run_dir / "model.torchscript.pt"
    traced.save(str(ts))
    out["torchscript"] = str(ts)
    onnx_path = run_dir / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (example,), str(onnx_path), input_names=["images"], output_names=["logits"],
                      dynamo=True, dynamic_shapes={"x": {0: batch}}, external_data=False, verbose=False)
    out["onnx"] = str(onnx_path)
    (run_dir / "block.json").write_text(json.dumps({"nsc": block.to_list(), "key": block.key}) + "\n")
    out["block"] = str(run_dir / "block.json")
    return out


def train(cfg: DictConfig, run_dir: Path) -> dict:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from hydra.utils import instantiate

    from blockqnn.config import TrainConfig, build, check
    from blockqnn.evaluator.module import BlockClassifier
    from blockqnn.evaluator.training import quiet_lightning, user_callbacks
    from blockqnn.space.cost import count_flops, count_params
    from blockqnn.space.draw import draw_block

    quiet_lightning()
    check(cfg, TrainConfig)
    run_dir = Path(run_dir)
    block = resolve_block(cfg.block)
    t = cfg.train
    explicit = t.get("ckpt_path")
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = Path(explicit) if explicit else (last if t.resume and last.exists() else None)
    if ckpt_path is not None:
        check_checkpoint(ckpt_path, block)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    device = "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    ddp = cfg.trainer.get("strategy") == "ddp"
    world = int(cfg.trainer.devices) * int(cfg.trainer.get("num_nodes") or 1) if ddp else 1
    if int(t.batch_size) % world:
        raise ConfigError(f"train.batch_size={t.batch_size} is the global batch and must divide by the "
                          f"{world} DDP processes (trainer.devices x trainer.num_nodes)")
    # train.batch_size is the global batch: each DDP rank takes its share.
    from blockqnn.data.modules import store_as

    dm = store_as(build(cfg.data, "data", batch_size=int(t.batch_size) // world, seed=int(cfg.seed),
                        device=device if not ddp else "cpu"), bool(cfg.network.get("channels_last", False)))
    dm.setup("fit")
    c, h, _ = dm.shape
    spec = {**OmegaConf.to_container(cfg.network, resolve=True), "num_classes": dm.num_classes, "in_channels": c,
            "input_size": h}
    scheduler = OmegaConf.to_container(cfg.model.scheduler, resolve=True) if cfg.model.scheduler else None
    model = BlockClassifier(block.to_list(), spec, OmegaConf.to_container(cfg.model.optimizer, resolve=True),
                            scheduler, label_smoothing=float(t.label_smoothing))
    callbacks: list = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}",
                                       auto_insert_metric_name=False, save_last=True, every_n_epochs=1)]
    throughput = Throughput()
    callbacks.append(throughput)
    callbacks += user_callbacks(cfg.callbacks)
    ema = EMACallback(float(t.ema)) if t.get("ema") else None
    if ema is not None:
        callbacks.append(ema)
    from lightning.pytorch.loggers import WandbLogger

    logger = _lightning_logger(cfg, run_dir, block)
    wandb = isinstance(logger, WandbLogger)
    for key in ("max_epochs", "callbacks", "logger", "default_root_dir"):
        if key in cfg.trainer:
            raise ConfigError(f"trainer.{key} is set by train.py (max_epochs: train.epochs; callbacks: callbacks=...; "
                              "logger: logger=...); remove it")
    trainer = instantiate(OmegaConf.to_container(cfg.trainer, resolve=True), max_epochs=int(t.epochs),
                          callbacks=callbacks, logger=logger, default_root_dir=str(run_dir),
                          enable_model_summary=False, num_sanity_val_steps=0)
    if wandb and trainer.is_global_zero:
        draw_block(block, run_dir / "block.png")
        logger.log_image(key="block", images=[str(run_dir / "block.png")])
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None, weights_only=True)
    wall = time.perf_counter() - start
    if ema is not None:
        ema.apply(model)
    test = trainer.test(model, datamodule=dm, verbose=False)
    metrics: dict[str, Any] = {}
    if trainer.is_global_zero:
        metrics = {
            "block": block.to_list(), "key": block.key,
            "test_acc": float(test[0]["test/acc"]) if test else None,
            "val_acc": float(trainer.callback_metrics["val/acc"]) if "val/acc" in trainer.callback_metrics else None,
            "params": count_params(model.net), "flops": count_flops(model.net, (c, h, h)),
            "epochs": int(trainer.current_epoch), "wall_time": wall,
            "resumed_from": str(ckpt_path) if ckpt_path else None,
            "images_per_second": throughput.rate,
        }
        if t.export:
            example = next(iter(dm.test_dataloader()))[0][:2]
            metrics["exports"] = export(model, example, run_dir, block)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if wandb and trainer.is_global_zero:
        logger.experiment.finish()
    return metrics
