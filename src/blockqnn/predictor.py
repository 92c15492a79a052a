"""The faster version: a reward predictor learned online from the blocks already measured.

A random forest over structural features of the NSC (counts of each layer kind, depth,
density, leaves, length) predicts a new block's reward, with the spread of its trees as the
uncertainty. Once it has ``min_measured`` measured blocks, a new block is trained only if its
prediction reaches the top ``top_fraction`` of the measured rewards or its uncertainty is in
the top ``explore_fraction`` of the measured blocks' uncertainties; otherwise the agent learns
from the predicted reward and the episode is stored as predicted (``predicted = 1``), never
mistaken for a measured one. The forest is refitted on the measured episodes only, with a
fixed seed (resuming refits it on the same episodes), once ``refit_every`` new measurements
and a ``refit_growth`` fraction more than at the last fit have come in (so a paper-scale search
refits a few dozen times, not every 8 of thousands). After each refit the search asks it again
for every predicted episode and the agent relearns those rewards: a prediction is not frozen
in the agent's memory at the value an early, poorer forest gave it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from blockqnn.result import empty_result
from blockqnn.space.nsc import KERNELS, ONE_INPUT, TWO_INPUT, Block, LayerType

KINDS = [(t.value, k) for t in sorted(ONE_INPUT) for k in KERNELS[t]] + [
    (t.value, 0) for t in sorted(TWO_INPUT)
]


def features(block: Block) -> np.ndarray:
    """Counts of each layer kind (type and kernel) and of each type, length, depth,
    density and the number of layers concatenated into the output."""
    counts = dict.fromkeys(KINDS, 0)
    types = dict.fromkeys(range(1, 7), 0)
    for layer in block.body:
        counts[(layer.type, layer.kernel)] += 1
        types[layer.type] += 1
    return np.array(
        list(counts.values())
        + list(types.values())
        + [len(block), block.depth, block.density, len(block.leaves)],
        dtype=np.float64,
    )


class RewardPredictor:
    def __init__(
        self,
        min_measured: int = 16,
        top_fraction: float = 0.3,
        explore_fraction: float = 0.1,
        refit_every: int = 8,
        n_estimators: int = 64,
        seed: int = 0,
        refit_growth: float = 0.1,
    ):
        if not 0 < top_fraction <= 1 or not 0 <= explore_fraction <= 1:
            raise ValueError(
                "search.predictor.top_fraction must be in (0, 1] and explore_fraction in [0, 1]"
            )
        self.min_measured, self.top_fraction = int(min_measured), float(top_fraction)
        self.explore_fraction, self.refit_every = float(explore_fraction), int(refit_every)
        self.n_estimators, self.seed = int(n_estimators), int(seed)
        if refit_growth < 0:
            raise ValueError("search.predictor.refit_growth must be >= 0")
        self.refit_growth = float(refit_growth)
        self.model = None
        self.fitted_on: list[int] = []  # episode ids of the last fit
        self.reward_cut = float("inf")
        self.std_cut = float("inf")
        self._features: dict[int, np.ndarray] = {}  # by episode id: computed once per block

    # ------------------------------------------------------------------ fitting
    def maybe_refit(self, measured: list[tuple[int, list, float]]) -> bool:
        """``measured``: (episode id, nsc, reward) of every measured episode so far. Whether it
        refitted."""
        if len(measured) < self.min_measured:
            return False
        new = len(measured) - len(self.fitted_on)
        if self.model is not None and (
            new < self.refit_every or new < self.refit_growth * len(self.fitted_on)
        ):
            return False
        self.fit(measured)
        return True

    def fit(self, measured: list[tuple[int, list, float]]) -> None:
        # lazy: scikit-learn only on the predictor/surrogate/digits paths
        from sklearn.ensemble import RandomForestRegressor

        measured = sorted(measured)
        for i, nsc, _ in measured:
            if i not in self._features:
                self._features[i] = features(Block.parse(nsc))
        x = np.stack([self._features[i] for i, _, _ in measured])
        y = np.array([r for _, _, r in measured])
        self.model = RandomForestRegressor(
            n_estimators=self.n_estimators, random_state=self.seed, min_samples_leaf=2
        )
        self.model.fit(x, y)
        self.fitted_on = [i for i, _, _ in measured]
        self.reward_cut = float(np.quantile(y, 1 - self.top_fraction))
        _, std = self._predict(x)
        self.std_cut = (
            float(np.quantile(std, 1 - self.explore_fraction))
            if self.explore_fraction > 0
            else float("inf")
        )

    # ------------------------------------------------------------------ predicting
    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_tree = np.stack([t.predict(x) for t in self.model.estimators_])
        return per_tree.mean(0), per_tree.std(0)

    def predict_many(self, blocks: list[Block]) -> np.ndarray:
        """Predicted rewards of several blocks at once."""
        return self._predict(np.stack([features(b) for b in blocks]))[0]

    def predict(self, block: Block) -> tuple[float, float]:
        mean, std = self._predict(features(block)[None])
        return float(mean[0]), float(std[0])

    def gate(self, block: Block) -> tuple[bool, float | None, float | None]:
        """(train it?, predicted reward, uncertainty). Everything is trained until ready."""
        if self.model is None:
            return True, None, None
        mean, std = self.predict(block)
        return (mean >= self.reward_cut or std >= self.std_cut), mean, std

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"fitted_on": list(self.fitted_on)}

    def load_state_dict(
        self, state: dict[str, Any], measured: list[tuple[int, list, float]]
    ) -> None:
        """Refit on exactly the episodes of the last fit (deterministic forest)."""
        ids = set(state.get("fitted_on") or [])
        if ids:
            self.fit([m for m in measured if m[0] in ids])


def predicted_result(block: Block, reward: float, std: float) -> dict[str, Any]:
    return empty_result(
        "ok",
        f"predicted (uncertainty {std:.4f}); not trained",
        reward=reward,
        density=block.density,
    )


def kendall_tau(a: list[float], b: list[float]) -> float:
    # lazy: SciPy only for the statistics
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


__all__ = ["RewardPredictor", "features", "predicted_result", "kendall_tau", "LayerType"]
