"""Baselines behind the same ask/tell interface: random search, regularized evolution
(Real et al., AAAI 2019) and Optuna's TPE choosing the layers one by one."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from blockqnn.agent.base import Agent
from blockqnn.errors import BlockError, ConfigError
from blockqnn.space.base import SearchSpace


class RandomAgent(Agent):
    """The space's random architectures (NSC: uniform random walks through the legal actions;
    NB201: uniform cells); epsilon is ignored."""

    name = "random"

    def ask(self, epsilon: float = 1.0):
        return self.space.sample(self.rng)

    def tell(self, block, reward: float) -> None:
        self.told += 1


class EvolutionAgent(Agent):
    """Regularized (aging) evolution (Real et al., AAAI 2019), as published: the population
    is the last ``population`` results; a child is the best of ``sample`` members drawn at
    random, changed by one of the space's mutations (:meth:`SearchSpace.mutate`: NSC, a layer's
    type, kernel or input, or a layer added or removed; NB201, one edge's op). Until the
    population is full, architectures are random.

    ``retrains_known``: a child the search already evaluated is evaluated again (a fresh draw,
    stored as a re-evaluation of that block), never handed its first, possibly lucky, result
    (with that result, a lucky block would outlive aging by being re-added at its old reward)."""

    name = "evolution"
    retrains_known = True

    def __init__(
        self,
        max_layers: int | None = None,
        seed: int = 0,
        population: int = 20,
        sample: int = 5,
        space: SearchSpace | None = None,
    ):
        super().__init__(max_layers, seed, space)

        if isinstance(population, bool) or int(population) < 1:
            raise ConfigError(f"agent.params.population={population} must be >= 1")
        if isinstance(sample, bool) or not 1 <= int(sample) <= int(population):
            raise ConfigError(
                f"agent.params.sample={sample} must be in 1..population ({population})"
            )
        self.population_size, self.sample = int(population), int(sample)
        self.population: deque[tuple[list, float]] = deque(maxlen=self.population_size)

    def ask(self, epsilon: float = 1.0):
        if len(self.population) < self.population_size:
            return self.space.sample(self.rng)
        members = [
            self.population[self.rng.randrange(len(self.population))] for _ in range(self.sample)
        ]
        parent = self.space.parse(max(members, key=lambda m: m[1])[0])
        return self.space.mutate(parent, self.rng)

    def mutate(self, parent):
        """One of the space's mutations of ``parent`` (never ``parent`` itself)."""
        return self.space.mutate(parent, self.rng)

    def tell(self, block, reward: float) -> None:
        self.told += 1
        self.population.append((block.to_list(), float(reward)))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": [list(m) for m in self.population],
            "sizes": [self.population_size, self.sample],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.population_size, self.sample = state["sizes"]
        self.population = deque(
            (tuple(m) for m in state["population"]), maxlen=self.population_size
        )


class TPEAgent(Agent):
    """Optuna's TPE sampler picking the block's layers one by one (define-by-run): parameter
    ``layer{i}`` is a categorical over the legal actions at index i, the Terminal included."""

    name = "tpe"

    def __init__(
        self,
        max_layers: int | None = None,
        seed: int = 0,
        n_startup_trials: int = 10,
        space: SearchSpace | None = None,
    ):
        super().__init__(max_layers, seed, space)
        if isinstance(n_startup_trials, bool) or int(n_startup_trials) < 0:
            raise ConfigError(f"agent.params.n_startup_trials={n_startup_trials} must be >= 0")
        self.n_startup_trials = int(n_startup_trials)
        self.history: list[tuple[list[list[int]], float]] = []
        self._new_study()

    def _new_study(self) -> None:
        # lazy: only agent=tpe needs Optuna
        # lazy: only agent=tpe needs Optuna
        # lazy: only agent=tpe needs Optuna
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(
            seed=self.seed, n_startup_trials=self.n_startup_trials, multivariate=False
        )
        self.study = optuna.create_study(direction="maximize", sampler=sampler)

    def _choices(self, step: int) -> list[str]:
        return [",".join(map(str, a)) for a in self.space.actions(step)]

    def _distributions(self, block) -> tuple[dict, dict]:
        # lazy: only agent=tpe needs Optuna
        from optuna.distributions import CategoricalDistribution

        params, dists = {}, {}
        for step, action in enumerate(self.space.decisions(block)):
            name = f"layer{step + 1}"
            dists[name] = CategoricalDistribution(self._choices(step))
            params[name] = ",".join(map(str, self.space.normal_action(step, action)))
        return params, dists

    def ask(self, epsilon: float = 1.0):
        # lazy: only agent=tpe needs Optuna
        import optuna

        trial = self.study.ask()
        body: list[tuple[int, ...]] = []
        while True:
            step = len(body)
            code = trial.suggest_categorical(f"layer{step + 1}", self._choices(step))
            body.append(tuple(map(int, code.split(","))))
            if self.space.ends(step, body[-1]):
                # Finished at once so that asked-but-untold trials never steer TPE; tell()
                # adds the completed trial with its value.
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                return self.space.build(body)

    def tell(self, block, reward: float) -> None:
        # lazy: only agent=tpe needs Optuna
        import optuna

        self.told += 1
        self.history.append((block.to_list(), float(reward)))
        params, dists = self._distributions(block)
        self.study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=float(reward))
        )

    def state_dict(self) -> dict[str, Any]:
        sampler = self.study.sampler
        return {
            **super().state_dict(),
            "history": [list(h) for h in self.history],
            "n_startup_trials": self.n_startup_trials,
            "rng_tpe": _np_state(sampler._rng.rng),
            "rng_random": _np_state(sampler._random_sampler._rng.rng),
            "asked": len(self.study.trials) - len(self.history),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # lazy: only agent=tpe needs Optuna
        import optuna

        super().load_state_dict(state)
        self.n_startup_trials = state["n_startup_trials"]
        self._new_study()
        self.history = []
        for nsc, reward in state["history"]:
            self.told -= 1  # tell() counts again
            self.tell(self.space.parse(nsc), reward)
        # Failed placeholder trials of asked blocks count toward Optuna's trial numbers.
        for _ in range(state["asked"]):
            self.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
        _set_np_state(self.study.sampler._rng.rng, state["rng_tpe"])
        _set_np_state(self.study.sampler._random_sampler._rng.rng, state["rng_random"])


def _np_state(rs) -> list:
    name, keys, pos, has_gauss, cached = rs.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _set_np_state(rs, state: list) -> None:
    name, keys, pos, has_gauss, cached = state
    rs.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


class ReplayAgent(Agent):
    """Asks the blocks of a JSON file in order (a list of NSC lists, or of objects with an
    ``nsc`` entry, such as a search's topk.json), then starts again from the first. For
    re-training chosen blocks under other seeds (the BlockQNN-Bench noise floor) and for
    checking a surrogate's picks against real training; epsilon is ignored."""

    name = "replay"

    def __init__(
        self,
        max_layers: int | None = None,
        seed: int = 0,
        path: str | None = None,
        space: SearchSpace | None = None,
    ):
        super().__init__(max_layers, seed, space)
        if not path or not Path(path).is_file():
            raise ConfigError(f"agent.params.path={path!r}: give a JSON file with a list of blocks")
        try:
            items = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"agent.params.path={path}: not JSON ({exc.msg} at char {exc.pos})"
            ) from None
        if not isinstance(items, list) or not items:
            raise ConfigError(f"agent.params.path={path}: expected a non-empty list of blocks")
        self.blocks = []
        for i, item in enumerate(items):
            nsc = item["nsc"] if isinstance(item, dict) and "nsc" in item else item
            try:
                self.blocks.append(self.space.parse(nsc))
            except BlockError as exc:
                raise ConfigError(f"agent.params.path={path}: block {i}: {exc}") from None
        self.asked = 0

    def ask(self, epsilon: float = 1.0):
        block = self.blocks[self.asked % len(self.blocks)]
        self.asked += 1
        return block

    def tell(self, block, reward: float) -> None:
        self.told += 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "asked": self.asked}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.asked = int(state["asked"])
