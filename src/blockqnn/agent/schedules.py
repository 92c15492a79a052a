"""Epsilon schedules: lists of ``(epsilon, iterations)`` pairs (BLOCKQNN.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from blockqnn.errors import ConfigError

#: The paper's schedule: 178 iterations of 64 blocks = 11,392 blocks.
PAPER = [
    (1.0, 95), (0.9, 7), (0.8, 7), (0.7, 7), (0.6, 10),
    (0.5, 10), (0.4, 10), (0.3, 10), (0.2, 10), (0.1, 12),
]

#: A short schedule for the CPU demo on digits (10 iterations).
SHORT = [(1.0, 4), (0.7, 2), (0.4, 2), (0.1, 2)]


def linear(start: float = 1.0, end: float = 0.1, steps: int = 10, iterations_each: int = 1) -> list[tuple[float, int]]:
    """Epsilon falling linearly from ``start`` to ``end`` in ``steps`` levels."""
    if steps < 2:
        return [(start, iterations_each)]
    return [(round(start + (end - start) * i / (steps - 1), 6), iterations_each) for i in range(steps)]


NAMED: dict[str, list[tuple[float, int]]] = {
    "paper": PAPER,
    "short": SHORT,
    "linear": linear(),
    "greedy": [(0.0, 1)],
    "random": [(1.0, 1)],
}


@dataclass(frozen=True)
class EpsilonSchedule:
    """Which epsilon each iteration (and each episode) uses."""

    steps: tuple[tuple[float, int], ...]
    name: str = "custom"

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.steps)

    def episodes(self, batch_size: int) -> int:
        return self.iterations * batch_size

    def epsilon_at_iteration(self, iteration: int) -> float:
        left = iteration
        for eps, n in self.steps:
            if left < n:
                return eps
            left -= n
        return self.steps[-1][0]

    def epsilon_at(self, episode: int, batch_size: int) -> float:
        """Epsilon for the ``episode``-th sampled block (0-based), iterations of ``batch_size``."""
        return self.epsilon_at_iteration(episode // batch_size)


def parse_schedule(spec: Any) -> EpsilonSchedule:
    """A schedule from a name (``paper``, ``short``, ``linear``, ``greedy``, ``random``) or an
    explicit list of ``[epsilon, iterations]`` pairs. Invalid ones raise ConfigError."""
    valid = ", ".join(NAMED)
    if isinstance(spec, str):
        if spec not in NAMED:
            raise ConfigError(
                f"agent.epsilon_schedule={spec!r} is not a known schedule; valid names: {valid}, "
                "or a list of [epsilon, iterations] pairs such as [[1.0,5],[0.1,5]]"
            )
        return EpsilonSchedule(tuple(NAMED[spec]), spec)
    if hasattr(spec, "items") or not isinstance(spec, Sequence) or isinstance(spec, (bytes, bytearray)):
        spec = _to_list(spec)
    pairs = list(spec)
    if not pairs:
        raise ConfigError(f"agent.epsilon_schedule is empty; valid names: {valid}, or [[epsilon, iterations], ...]")
    steps = []
    for i, pair in enumerate(pairs):
        pair = _to_list(pair)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(f"agent.epsilon_schedule entry {i} = {pair!r} is not an [epsilon, iterations] pair; valid names: {valid}")
        eps, n = pair
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= float(eps) <= 1.0:
            raise ConfigError(f"agent.epsilon_schedule entry {i}: epsilon {eps!r} is outside [0, 1]; valid names: {valid}")
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(f"agent.epsilon_schedule entry {i}: iterations {n!r} must be a positive integer; valid names: {valid}")
        steps.append((float(eps), int(n)))
    return EpsilonSchedule(tuple(steps))


def _to_list(obj: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (ListConfig, DictConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        raise ConfigError(f"agent.epsilon_schedule must be a name or a list of pairs, got a mapping {obj!r}")
    return obj
