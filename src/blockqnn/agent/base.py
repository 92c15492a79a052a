"""The ask/tell interface every search strategy implements."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any

from blockqnn.space.base import SearchSpace
from blockqnn.space.nsc import DEFAULT_MAX_LAYERS, Block, NSCSpace


def rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


class Agent(ABC):
    """A search strategy over a search space (:class:`blockqnn.space.base.SearchSpace`: every
    agent walks every space through it). ``ask(epsilon)`` proposes a block, ``tell(block, reward)`` teaches it
    the result. Each agent owns a seeded ``random.Random``, independent of the global random
    state that training touches, and round-trips through plain JSON-able ``state_dict()``.

    The search saves the agent after every sampled block and every result through
    ``checkpoint()``: a small state plus, for agents whose state grows with the search, the
    entries of their large parts (named mappings of text keys to JSON values) changed since
    the previous checkpoint, so a save costs what changed, not the whole history.
    ``restore(state, parts)`` rebuilds the agent from the small state and every saved entry."""

    name = "agent"

    def __init__(
        self, max_layers: int | None = None, seed: int = 0, space: SearchSpace | None = None
    ):
        # The space the agent walks (space=...); ``max_layers`` alone: the NSC space of that size.
        self.space = space if space is not None else NSCSpace(max_layers or DEFAULT_MAX_LAYERS)
        self.max_layers = int(getattr(self.space, "max_layers", self.space.max_steps))
        self.seed = int(seed)
        self.rng = random.Random(self.seed)
        self.told = 0

    @abstractmethod
    def ask(self, epsilon: float = 1.0) -> Block: ...

    @abstractmethod
    def tell(self, block: Block, reward: float) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_layers": self.max_layers,
            "seed": self.seed,
            "rng": rng_state(self.rng),
            "told": self.told,
            "space": {"name": self.space.name, **self.space.state_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(
                f"state of agent {state.get('name')!r} cannot be loaded into {self.name!r}"
            )
        self.max_layers, self.seed, self.told = state["max_layers"], state["seed"], state["told"]
        set_rng_state(self.rng, state["rng"])

    def relabel(self, rewards: dict[int, float]) -> None:
        """Replace the rewards of results already told (by their order of telling, from 0):
        the predictor's refreshed estimates. Q-learning relearns from its replay memory, so it
        takes them; the baselines (random search, evolution, TPE) keep what they were told."""
        return None  # a hook with nothing to do by default (not an abstract method)

    def compact(self) -> None:
        """Let the next checkpoint save the state in the form that restores fastest (the search
        has ended). Q-learning snapshots its table; the others have one form only."""
        return None  # a hook with nothing to do by default (not an abstract method)

    def checkpoint(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(small state, {part: {key: value changed since the last checkpoint}})."""
        return self.state_dict(), {}

    def restore(self, state: dict[str, Any], parts: dict[str, dict[str, Any]]) -> None:
        self.load_state_dict(state)
