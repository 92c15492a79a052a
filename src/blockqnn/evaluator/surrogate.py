"""The BlockQNN-Bench surrogate evaluator (``evaluator=surrogate``): a predicted accuracy in
microseconds instead of a training, for studying searches at the paper's scale.

A regression model is fitted on the BlockQNN-Bench table (real trainings of NSC blocks on the
bench proxy, ``experiment=bench_table``; README "BlockQNN-Bench") over structural features
of the block. For any valid block it returns that predicted validation accuracy plus noise
drawn to match the table's measured seed-to-seed standard deviation (deterministic for a
given seed and canonical key), the exact FLOPs and parameters of the run's network (computed
from the NSC, :func:`blockqnn.space.cost.network_cost`), the density, and the shaped reward
from the same reward code as real training. The accuracy imitates the bench proxy whatever
the run's data; FLOPs and parameters are those of the run's own network and input size."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

# At module top (not inside __call__): an evaluation's time limit must not pay for imports.
from blockqnn.data.shapes import network_spec
from blockqnn.errors import BlockError, ConfigError
from blockqnn.evaluator.reward import RewardConfig, shaped_reward
from blockqnn.predictor import features
from blockqnn.result import empty_result
from blockqnn.space.cost import network_cost
from blockqnn.space.nsc import Block, LayerType
from blockqnn.space.presets import preset

#: The table shipped with the repository (bench/data/, built by bench/bench_table.py).
DEFAULT_TABLE = Path(__file__).resolve().parents[3] / "bench" / "data" / "blockqnn_bench.csv.gz"
MODELS = ("gbt", "forest")

#: (channels, side, classes) of the data sets whose shape is known without loading them.


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a BlockQNN-Bench table (one per training)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"evaluator.table={path}: no such file (the BlockQNN-Bench table; "
            "bench/collect.sh and bench/bench_table.py build it)"
        )
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def block_features(nsc: Any) -> np.ndarray:
    """Structural features of a block: those of the online predictor (counts of each layer
    kind and type, length, depth, density, output leaves) plus the share of each type and the
    longest chain of convolutions."""

    block = Block.parse(nsc)
    base = features(block)
    n = max(1, len(block.body))
    shares = [sum(la.type == t for la in block.body) / n for t in range(1, 7)]
    conv_depth: dict[int, int] = {0: 0}
    for la in block.body:
        d = max(conv_depth.get(p, 0) for p in la.preds) if la.preds else 0
        conv_depth[la.index] = d + (1 if la.type == LayerType.CONV else 0)
    return np.concatenate([base, shares, [max(conv_depth.values())]])


def measured(
    rows: list[dict[str, Any]],
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, float]:
    """Per canonical key: NSC, mean accuracy over its trainings, trainings count; and the
    pooled seed-to-seed standard deviation of the keys trained more than once (nan if none)."""
    by_key: dict[str, list[float]] = {}
    nsc: dict[str, str] = {}
    for r in rows:
        if r["status"] != "ok" or not r["accuracy"]:
            continue
        by_key.setdefault(r["key"], []).append(float(r["accuracy"]))
        nsc[r["key"]] = r["nsc"]
    keys = sorted(by_key)
    acc = np.array([np.mean(by_key[k]) for k in keys])
    count = np.array([len(by_key[k]) for k in keys])
    repeats = [np.var(v, ddof=1) for v in by_key.values() if len(v) > 1]
    noise = float(math.sqrt(np.mean(repeats))) if repeats else float("nan")
    return keys, [nsc[k] for k in keys], acc, count, noise


#: The surrogate's regressors, chosen by held-out Kendall tau on the table (BENCHMARKS.md "The
#: surrogate's held-out quality"). They define the benchmark, as its table does, and are part of
#: what a surrogate search's results mean: not a run setting, so no config key (a change here is a
#: new surrogate, to be measured again with bench/surrogate_quality.py).
REGRESSORS: dict[str, dict[str, Any]] = {
    "gbt": {
        "max_iter": 300,
        "learning_rate": 0.05,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 10,
        "l2_regularization": 1.0,
    },
    "forest": {"n_estimators": 100, "min_samples_leaf": 3, "n_jobs": 1},
}


def fit_model(kind: str, x: np.ndarray, y: np.ndarray, seed: int = 0):
    """A fitted regressor of accuracy on block features (:data:`REGRESSORS`)."""
    if kind == "gbt":
        # lazy: scikit-learn only on the predictor/surrogate/digits paths
        from sklearn.ensemble import HistGradientBoostingRegressor as regressor
    elif kind == "forest":
        # lazy: scikit-learn only on the predictor/surrogate/digits paths
        from sklearn.ensemble import RandomForestRegressor as regressor
    else:
        raise ConfigError(f"evaluator.model={kind!r}: known models: {', '.join(MODELS)}")
    return regressor(**REGRESSORS[kind], random_state=seed).fit(x, y)


class FlatForest:
    """A fitted sklearn random forest as padded arrays, its trees walked together with numpy:
    the same predictions as ``forest.predict`` for one block in ~0.1 ms instead of ~10-50 ms
    (sklearn dispatches each tree through joblib; the surrogate predicts one block at a time)."""

    def __init__(self, forest):
        trees = [e.tree_ for e in forest.estimators_]
        n = max(t.node_count for t in trees)
        shape = (len(trees), n)
        self.feature = np.zeros(shape, dtype=np.int64)
        self.threshold = np.zeros(shape)
        self.left = np.zeros(shape, dtype=np.int64)
        self.right = np.zeros(shape, dtype=np.int64)
        self.value = np.zeros(shape)
        for i, t in enumerate(trees):
            k = t.node_count
            leaf = t.children_left[:k] == -1
            self.feature[i, :k] = np.where(leaf, 0, t.feature[:k])
            self.threshold[i, :k] = t.threshold[:k]
            self.left[i, :k] = np.where(
                leaf, np.arange(k), t.children_left[:k]
            )  # a leaf points at itself
            self.right[i, :k] = np.where(leaf, np.arange(k), t.children_right[:k])
            self.value[i, :k] = t.value[:k, 0, 0]
        self.depth = max(e.get_depth() for e in forest.estimators_)
        self.rows = np.arange(len(trees))

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for j, row in enumerate(np.asarray(x, dtype=np.float32)):
            node = np.zeros(len(self.rows), dtype=np.int64)
            for _ in range(self.depth):
                go_left = row[self.feature[self.rows, node]] <= self.threshold[self.rows, node]
                node = np.where(go_left, self.left[self.rows, node], self.right[self.rows, node])
            out[j] = self.value[self.rows, node].mean()
        return out


_FITTED: dict[
    tuple, Any
] = {}  # (table, mtime, model) -> (fitted regressor, noise std); no candidate state


class SurrogateEvaluator:
    """``evaluator(nsc) -> result`` from the BlockQNN-Bench surrogate. ``table``: the table
    (null: the repository's); ``model``: ``gbt`` or ``forest``; ``noise_std``: null for the
    table's measured seed-to-seed standard deviation, or a number; ``num_classes``: for data
    whose class count is not known without loading it (image_folder). ``devices`` is accepted
    for parity with the Lightning evaluator and unused; ``timeout_s`` is kept for the executors,
    which stop an evaluation running past it (the surrogate itself answers at once)."""

    trains = False  # no device, no data: GPU and data checks do not apply

    def __init__(
        self,
        run: DictConfig | dict,
        table: str | None,
        model: str,
        noise_std: float | None,
        num_classes: int | None,
        devices: int,
        timeout_s: float | None,
    ):
        self.run = run if isinstance(run, DictConfig) else OmegaConf.create(run)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.table = Path(table) if table else DEFAULT_TABLE
        if model not in MODELS:
            raise ConfigError(f"evaluator.model={model!r}: known models: {', '.join(MODELS)}")
        if noise_std is not None and float(noise_std) < 0:
            raise ConfigError(f"evaluator.noise_std={noise_std} must be >= 0 or null")
        self.model_kind = model
        self.noise_override = None if noise_std is None else float(noise_std)
        self.num_classes = num_classes
        self._model = None
        self.noise_std = float("nan")
        self.spec = self._network_spec()

        self.reward_cfg = RewardConfig(**OmegaConf.to_container(self.run.reward, resolve=True))
        self.ref_flops = network_cost(preset(str(self.run.reward.flops_reference)), **self.spec)[0]

    def _network_spec(self) -> dict[str, Any]:
        data = OmegaConf.to_container(self.run.data, resolve=True)
        net = {
            k: v
            for k, v in OmegaConf.to_container(self.run.network, resolve=True).items()
            if k not in ("drop_path", "channels_last")
        }
        try:
            return network_spec(net, data, self.num_classes)
        except ConfigError as exc:
            raise ConfigError(f"evaluator=surrogate: {exc}") from None

    def prepare(self) -> None:
        """Fit the surrogate now (once per process and table): a missing table fails early."""
        key = (
            str(self.table.resolve()) if self.table.exists() else str(self.table),
            self.table.stat().st_mtime if self.table.exists() else None,
            self.model_kind,
        )
        if key not in _FITTED:
            rows = read_table(self.table)
            keys, nscs, acc, _, noise = measured(rows)
            if len(keys) < 20:
                raise ConfigError(
                    f"evaluator.table={self.table} has {len(keys)} measured blocks; at least 20 needed"
                )
            x = np.stack([block_features(json.loads(s)) for s in nscs])
            _FITTED.clear()
            model = fit_model(self.model_kind, x, acc)
            _FITTED[key] = (FlatForest(model) if self.model_kind == "forest" else model, noise)
        self._model, measured_noise = _FITTED[key]
        self.noise_std = self.noise_override if self.noise_override is not None else measured_noise
        if math.isnan(self.noise_std):
            raise ConfigError(
                f"evaluator.table={self.table} has no block trained under several seeds: "
                "set evaluator.noise_std"
            )

    def _noise(self, key: str, repeat: int = 0) -> float:
        """A normal draw (Box-Muller on two uniforms from the SHA-256 of seed, key and repeat):
        the same evaluation of a block under the same seed always gets the same noise, in
        microseconds; each re-evaluation (``repeat`` > 0) an independent draw."""
        if not self.noise_std > 0:
            return 0.0
        text = f"{int(self.run.seed)}:{key}" + (f":{int(repeat)}" if repeat else "")
        digest = hashlib.sha256(text.encode()).digest()
        u1 = (int.from_bytes(digest[:8], "little") + 1) / 2.0**64  # in (0, 1]
        u2 = int.from_bytes(digest[8:16], "little") / 2.0**64
        return self.noise_std * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)

    def predict(self, nscs: list) -> np.ndarray:
        """The surrogate's mean accuracy for blocks (no noise)."""
        if self._model is None:
            self.prepare()
        return self._model.predict(np.stack([block_features(n) for n in nscs]))

    def true_reward(self, nsc: Any) -> tuple[float, float]:
        """The block's noise-free (reward, accuracy): the surrogate's mean, the figure a search's
        returned block is scored by (never a noisy draw)."""
        return self.true_rewards([nsc])[0]

    def true_rewards(self, nscs: list) -> list[tuple[float, float]]:
        """:meth:`true_reward` of many blocks (one batched prediction)."""

        blocks = [Block.parse(n) for n in nscs]
        if not blocks:
            return []
        out = []
        for block, mean in zip(blocks, self.predict(blocks)):
            accuracy = min(1.0, max(0.0, float(mean)))
            flops, _ = network_cost(block, **self.spec)
            out.append(
                (
                    shaped_reward(accuracy, flops, self.ref_flops, block.density, self.reward_cfg),
                    accuracy,
                )
            )
        return out

    def __call__(self, nsc: Any, repeat: int = 0) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            block = Block.parse(nsc)
        except BlockError as exc:
            return empty_result("invalid", f"invalid block: {exc}")
        if self._model is None:
            self.prepare()
        mean = float(self._model.predict(block_features(block)[None])[0])
        accuracy = min(1.0, max(0.0, mean + self._noise(block.key, repeat)))
        flops, params = network_cost(block, **self.spec)
        reward = shaped_reward(accuracy, flops, self.ref_flops, block.density, self.reward_cfg)
        return empty_result(
            "ok",
            None,
            reward=reward,
            accuracy=accuracy,
            flops=flops,
            params=params,
            density=block.density,
            epochs=int(self.run.recipe.epochs),
            history=[accuracy],
            wall_time=time.perf_counter() - start,
        )
