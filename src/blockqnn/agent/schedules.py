"""Epsilon schedules: lists of ``(epsilon, iterations)`` pairs (BLOCKQNN.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from blockqnn.errors import ConfigError

#: The paper's schedule: 178 iterations of 64 blocks = 11,392 blocks.
PAPER = [
    (1.0, 95),
    (0.9, 7),
    (0.8, 7),
    (0.7, 7),
    (0.6, 10),
    (0.5, 10),
    (0.4, 10),
    (0.3, 10),
    (0.2, 10),
    (0.1, 12),
]

#: A short schedule for the CPU demo on digits (10 iterations).
SHORT = [(1.0, 4), (0.7, 2), (0.4, 2), (0.1, 2)]

#: Blocks per iteration of a schedule given as a list of pairs, when ``agent.batch_size`` is
#: null (named schedules carry their own iteration size).
DEFAULT_BATCH = 8


def linear(
    start: float = 1.0, end: float = 0.1, steps: int = 10, iterations_each: int = 1
) -> list[tuple[float, int]]:
    """Epsilon falling linearly from ``start`` to ``end`` in ``steps`` levels."""
    if steps < 2:
        return [(start, iterations_each)]
    return [
        (round(start + (end - start) * i / (steps - 1), 6), iterations_each) for i in range(steps)
    ]


#: Named schedules: (epsilon steps, blocks per iteration). The paper's iterations are 64 blocks
#: (BLOCKQNN.md section 5), so ``agent.epsilon_schedule=paper`` plans 11,392 blocks unless
#: ``agent.batch_size`` says otherwise.
NAMED: dict[str, tuple[list[tuple[float, int]], int]] = {
    "paper": (PAPER, 64),
    "short": (SHORT, DEFAULT_BATCH),
    "linear": (linear(), DEFAULT_BATCH),
    "greedy": ([(0.0, 1)], DEFAULT_BATCH),
    "random": ([(1.0, 1)], DEFAULT_BATCH),
}


@dataclass(frozen=True)
class EpsilonSchedule:
    """Which epsilon each iteration (and each episode) uses."""

    steps: tuple[tuple[float, int], ...]
    name: str = "custom"
    batch_size: int = DEFAULT_BATCH  # blocks per iteration

    @property
    def planned(self) -> int:
        """Blocks the whole schedule samples: iterations x blocks per iteration."""
        return self.iterations * self.batch_size

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.steps)

    def episodes(self, batch_size: int | None = None) -> int:
        return self.iterations * (self.batch_size if batch_size is None else batch_size)

    def epsilon_at_iteration(self, iteration: int) -> float:
        left = iteration
        for eps, n in self.steps:
            if left < n:
                return eps
            left -= n
        return self.steps[-1][0]

    def epsilon_at(self, episode: int, batch_size: int | None = None) -> float:
        """Epsilon for the ``episode``-th sampled block (0-based), iterations of ``batch_size``
        (default: the schedule's own)."""
        return self.epsilon_at_iteration(
            episode // (self.batch_size if batch_size is None else batch_size)
        )


def parse_schedule(spec: Any, batch_size: int | None = None) -> EpsilonSchedule:
    """A schedule from a name (``paper``, ``short``, ``linear``, ``greedy``, ``random``) or an
    explicit list of ``[epsilon, iterations]`` pairs, with its blocks per iteration:
    ``batch_size`` when given (``agent.batch_size``), else the named schedule's own (paper: 64)
    or DEFAULT_BATCH for a list. Invalid ones raise ConfigError."""
    schedule = _parse_steps(spec)
    if batch_size is not None:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ConfigError(
                f"agent.batch_size={batch_size} must be a positive integer or null "
                "(null: the schedule's own iteration size)"
            )
        return EpsilonSchedule(schedule.steps, schedule.name, int(batch_size))
    return schedule


def scaled(steps: Sequence[tuple[float, int]], iterations: int) -> list[tuple[float, int]]:
    """A schedule's epsilon levels over ``iterations`` iterations, each level keeping its share
    of the original's iterations (largest remainders, ties to the earlier level; the original
    at its own length is itself), every level at least one iteration (taken from the longest);
    with fewer iterations than levels, the first levels, one iteration each."""
    total = sum(n for _, n in steps)
    if iterations < len(steps):
        return [(eps, 1) for eps, _ in steps[: max(1, iterations)]]
    exact = [n * iterations / total for _, n in steps]
    counts = [int(x) for x in exact]
    order = sorted(range(len(steps)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: iterations - sum(counts)]:
        counts[i] += 1
    for i, n in enumerate(counts):
        if n == 0:
            counts[i] = 1
            counts[counts.index(max(counts))] -= 1
    return [(eps, n) for (eps, _), n in zip(steps, counts)]


def _parse_steps(spec: Any) -> EpsilonSchedule:
    valid = ", ".join(NAMED)
    if isinstance(spec, str) and ":" in spec:  # <name>:<iterations>, e.g. paper:290
        name, _, count = spec.partition(":")
        if name not in NAMED or not count.strip().isdigit() or int(count) < 1:
            raise ConfigError(
                f"agent.epsilon_schedule={spec!r}: a scaled schedule is <name>:<iterations> "
                f"with a name among {valid} and a positive number of iterations (e.g. paper:290)"
            )
        steps, batch = NAMED[name]
        return EpsilonSchedule(tuple(scaled(steps, int(count))), spec, batch)
    if isinstance(spec, str):
        if spec not in NAMED:
            raise ConfigError(
                f"agent.epsilon_schedule={spec!r} is not a known schedule; valid names: {valid}, "
                "or a list of [epsilon, iterations] pairs such as [[1.0,5],[0.1,5]]"
            )
        steps, batch = NAMED[spec]
        return EpsilonSchedule(tuple(steps), spec, batch)
    if (
        hasattr(spec, "items")
        or not isinstance(spec, Sequence)
        or isinstance(spec, (bytes, bytearray))
    ):
        spec = _to_list(spec)
    pairs = list(spec)
    if not pairs:
        raise ConfigError(
            f"agent.epsilon_schedule is empty; valid names: {valid}, or [[epsilon, iterations], ...]"
        )
    steps = []
    for i, pair in enumerate(pairs):
        pair = _to_list(pair)
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConfigError(
                f"agent.epsilon_schedule entry {i} = {pair!r} is not an [epsilon, iterations] pair; "
                f"valid names: {valid}"
            )
        eps, n = pair
        if (
            isinstance(eps, bool)
            or not isinstance(eps, (int, float))
            or not 0.0 <= float(eps) <= 1.0
        ):
            raise ConfigError(
                f"agent.epsilon_schedule entry {i}: epsilon {eps!r} is outside [0, 1]; valid names: {valid}"
            )
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ConfigError(
                f"agent.epsilon_schedule entry {i}: iterations {n!r} must be a positive integer; valid names: {valid}"
            )
        steps.append((float(eps), int(n)))
    return EpsilonSchedule(tuple(steps))


def _to_list(obj: Any) -> Any:
    try:
        if isinstance(obj, (ListConfig, DictConfig)):
            return OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        raise ConfigError(
            f"agent.epsilon_schedule must be a name or a list of pairs, got a mapping {obj!r}"
        )
    return obj
