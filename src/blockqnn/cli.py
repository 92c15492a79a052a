"""What the entry scripts run: errors become one clear message and a non-zero exit."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from blockqnn.errors import BlockQNNError
from blockqnn.listing import outputs_line

#: train.py's main outputs, listed first on its "outputs in" line.
TRAIN_OUTPUTS = (
    "metrics.json",
    "checkpoints",
    "model.torchscript.pt",
    "model.onnx",
    "block.json",
    "block.png",
    "block.svg",
    "network.png",
    "network.svg",
)


def run_dir() -> Path:
    # lazy: Hydra's runtime only when it runs
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _task_overrides() -> list[str] | None:
    """The command line's overrides; None when not run by Hydra's app (a test, a notebook)."""
    # lazy: Hydra's runtime only when it runs
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def run_search(cfg: DictConfig):
    # lazy: each entry point loads only its own side (search.py never loads train.py's stack)
    from hydra import compose

    from blockqnn.search.loop import Search
    from blockqnn.search.origin import current_origin, merged, restore_hydra_files, stored_origin
    from blockqnn.search.setup import validate

    folder = run_dir()
    given = _task_overrides()
    origin = stored_origin(folder) if given is not None else None
    try:
        if origin is not None:  # resume with the folder's own configuration (search/origin.py)
            overrides = merged(origin["overrides"], given)
            if overrides != given:
                cfg = compose(config_name="search", overrides=overrides)
                print(
                    "resuming with the folder's own overrides: " + " ".join(overrides),
                    file=sys.stderr,
                )
            restore_hydra_files(folder, origin)
        evaluator = validate(cfg)
        search = Search(cfg, folder, evaluator=evaluator)
        if given is not None:
            search.origin = origin or current_origin(folder, given)
        return search.run()
    except BlockQNNError as exc:
        restore_hydra_files(folder, origin)  # a refused start leaves the folder as it was
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def run_train(cfg: DictConfig):
    # lazy: each entry point loads only its own side (train.py never loads the search's)
    from blockqnn.final import train

    try:
        out = run_dir()
        metrics = train(cfg, out)
        if metrics:
            scores = (
                f"test accuracy {metrics['test_acc']:.4f}"
                if metrics.get("test_acc") is not None
                else f"validation accuracy {metrics['val_acc']:.4f} (train.test=false)"
            )
            print(f"{scores}; " + outputs_line(out, TRAIN_OUTPUTS), file=sys.stderr)
        return metrics
    except BlockQNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
