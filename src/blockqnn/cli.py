"""What the entry scripts run: errors become one clear message and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from blockqnn.errors import BlockQNNError


def run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def run_search(cfg: DictConfig):
    from blockqnn.search.loop import Search, validate

    try:
        evaluator = validate(cfg)
        return Search(cfg, run_dir(), evaluator=evaluator).run()
    except BlockQNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run_train(cfg: DictConfig):
    from blockqnn.final import train

    try:
        out = run_dir()
        metrics = train(cfg, out)
        if metrics:
            print(f"test accuracy {metrics['test_acc']:.4f}; outputs in {out}: metrics.json, checkpoints/, "
                  "model.torchscript.pt, model.onnx, block.json", file=sys.stderr)
        return metrics
    except BlockQNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
