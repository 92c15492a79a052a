"""Networks sized to a budget: the per-stage widths that give a block's network about N
parameters (``network.params``) or N FLOPs per image (``network.flops``).

One function, :func:`fit_widths`, chooses them for search.py's candidates and for train.py's
matched comparisons alike (:func:`resolve` applies it to a network spec). Why per-stage widths:
one integer base width F rarely lands within 3% on small networks (at about 60k parameters one
step of F moves the network by 20-30%), while the stages' widths, each rounded on its own and
then nudged by one channel, move it by about 1%. The profile stays the paper's (each stage about
twice the previous one); the widths are its nearest integers.

A block whose network cannot reach the budget is handled so: under it even at the widest
profile (``network.max_width`` channels in the first stage; blocks of pooling and identity
layers only have few parameters at any width) it is built at that widest profile and shows its
smaller count; over it even at one channel per stage (a budget below what the block's layers
need) it does not fit: :class:`OverBudget`, which a search records as an ``invalid`` candidate
and train.py refuses.

A block whose own layers hold no parameters (pooling, identity and add layers only) spends the
whole budget outside the block (the stem and the 1x1 projections where a stage widens, at 4-6x
the usual width). ``network.parameter_free=refuse`` refuses it at a budget (:class:`ParameterFree`,
an ``invalid`` candidate in a search); ``allow``, the default, trains it. Measured
(BENCHMARKS.md "After the searches"): all 12 searches at a budget returned such a block; the
budget-matched proxies rank them at a mean of 4th-13th of 47 blocks and the final training, at
four seeds, 6th-17th, an error no larger than the proxy's on other blocks, so refusing them is a choice,
not a correction. Without a budget the rule does nothing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from blockqnn.errors import ConfigError

#: Keys of a network spec (``network.*``) that describe a budget rather than the network.
BUDGET_KEYS = ("params", "flops", "max_width", "budget_tolerance", "parameter_free")
MEASURES = ("params", "flops")
#: ``network.parameter_free``: what a budget does with a block whose own layers hold no
#: parameters.
PARAMETER_FREE = ("refuse", "allow")


class OverBudget(ConfigError):
    """The block's network is over the budget even at its narrowest (one channel per stage)."""


class ParameterFree(ConfigError):
    """A block whose own layers hold no parameters, at a budget (``network.parameter_free``)."""


@dataclass(frozen=True)
class WidthFit:
    """The widths :func:`fit_widths` chose and what the network then costs."""

    widths: tuple[int, ...]
    params: int
    flops: int
    measure: str  # "params" or "flops": what the budget counts
    target: int
    tolerance: float

    @property
    def value(self) -> int:
        return self.params if self.measure == "params" else self.flops

    @property
    def gap(self) -> float:
        """(cost - budget) / budget: negative under the budget."""
        return (self.value - self.target) / self.target

    @property
    def within(self) -> bool:
        return abs(self.gap) <= self.tolerance


def profile(base: float, stages: int) -> tuple[int, ...]:
    """Stage widths of first-stage width ``base`` doubling at each stage, each rounded to the
    nearest integer (halves up), at least 1."""
    return tuple(max(1, math.floor(base * 2**s + 0.5)) for s in range(stages))


def _deviation(widths: tuple[int, ...]) -> float:
    """How far widths stray from a doubling profile (0 for an exact one)."""
    logs = [math.log2(w) - s for s, w in enumerate(widths)]
    mean = sum(logs) / len(logs)
    return sum((x - mean) ** 2 for x in logs)


def fit_widths(
    block,
    measure: str,
    target: int,
    *,
    max_width: int = 256,
    tolerance: float = 0.03,
    stages: int = 3,
    **spec: Any,
) -> WidthFit:
    """The per-stage widths whose network (``spec``: kind, num_classes, in_channels,
    input_size, blocks_per_stage) costs nearest ``target`` in ``measure`` ("params" or
    "flops"): the doubling profile bracketing the target (first-stage widths 1 ..
    ``max_width`` on a 1% grid), then every stage's width moved by -1, 0 or +1 around both
    bracketing profiles; of those within a third of ``tolerance`` the one nearest an exact
    doubling wins (else the nearest count). Deterministic, and a few milliseconds (the
    counts come from the NSC).

    Raises :class:`OverBudget` when even one channel per stage costs more than
    ``target`` x (1 + ``tolerance``)."""

    # lazy: cost.py imports torch; the search's master imports this module without it
    from blockqnn.space.cost import network_cost
    from blockqnn.space.nsc import Block

    if measure not in MEASURES:
        raise ConfigError(f"a budget counts one of {', '.join(MEASURES)}, not {measure!r}")
    if int(target) < 1:
        raise ConfigError(f"network.{measure}={target} must be a positive count")
    if int(max_width) < 1:
        raise ConfigError(f"network.max_width={max_width} must be >= 1")
    if not isinstance(block, Block):
        block = Block.parse(block)
    stages, target = int(stages), int(target)
    spec = {k: v for k, v in spec.items() if k not in ("width", "widths", *BUDGET_KEYS)}
    memo: dict[tuple[int, ...], tuple[int, int]] = {}

    def cost(widths: tuple[int, ...]) -> int:
        if widths not in memo:
            memo[widths] = network_cost(block, widths=widths, stages=stages, **spec)
        flops, params = memo[widths]
        return params if measure == "params" else flops

    grid = sorted({profile(1.01**k, stages) for k in range(int(math.log(max_width, 1.01)) + 2)})
    grid = [g for g in grid if g[0] <= max_width] or [profile(1, stages)]
    # The costs grow with every width: bisect the grid for the first profile at or over target.
    lo, hi = 0, len(grid)
    while lo < hi:
        mid = (lo + hi) // 2
        if cost(grid[mid]) < target:
            lo = mid + 1
        else:
            hi = mid
    around = {grid[i] for i in (lo - 1, lo) if 0 <= i < len(grid)}
    candidates = set(around) | ({(1,) * stages} if lo == 0 else set())
    if stages <= 6:  # 3^stages neighbours of each bracketing profile
        for base in around:
            for step in itertools.product((-1, 0, 1), repeat=stages):
                widths = tuple(w + d for w, d in zip(base, step))
                if min(widths) >= 1 and widths[0] <= max_width:
                    candidates.add(widths)
    # Within a third of the tolerance, the profile nearest an exact doubling wins; failing
    # that, the nearest count.
    close = float(tolerance) / 3 * target

    def rank(w: tuple[int, ...]) -> tuple:
        miss = abs(cost(w) - target)
        if miss <= close:
            return (0, round(_deviation(w), 9), miss, w)
        return (1, miss, round(_deviation(w), 9), w)

    best = min(candidates, key=rank)
    flops, params = memo[best]
    fit = WidthFit(best, params, flops, measure, target, float(tolerance))
    if fit.gap > fit.tolerance:
        raise OverBudget(
            f"network.{measure}={target}: this block's network needs {fit.value} {measure} even "
            f"at widths {list(best)}, {fit.gap:+.0%} over the budget"
        )
    return fit


def budget_of(spec: dict[str, Any]) -> tuple[str, int] | None:
    """The budget a network spec asks for, (measure, target), or None (a fixed width)."""
    asked = [(m, spec.get(m)) for m in MEASURES if spec.get(m) is not None]
    if len(asked) > 1:
        raise ConfigError("set network.params or network.flops, not both")
    if not asked:
        return None
    measure, target = asked[0]
    if isinstance(target, bool) or not isinstance(target, int | float) or int(target) != target:
        raise ConfigError(f"network.{measure}={target!r} must be an integer count or null")
    if int(target) < 1:
        raise ConfigError(f"network.{measure}={target} must be a positive count or null")
    return measure, int(target)


def resolve(block, spec: dict[str, Any]) -> tuple[dict[str, Any], WidthFit | None]:
    """``spec`` made concrete for ``block``: with a budget, its ``widths`` chosen by
    :func:`fit_widths` and the budget keys removed (what build_network and network_cost take);
    without one, the spec less the budget keys. Also the fit (None without a budget)."""
    concrete = {k: v for k, v in spec.items() if k not in BUDGET_KEYS}
    asked = budget_of(spec)
    if asked is None:
        return concrete, None
    measure, target = asked
    # A spec without the key (a library call, a folder from before it): as before the rule.
    rule = spec.get("parameter_free") or "allow"
    if rule not in PARAMETER_FREE:
        raise ConfigError(
            f"network.parameter_free={rule!r} must be one of {', '.join(PARAMETER_FREE)}"
        )
    # lazy: cost.py imports torch; the search's master imports this module without it
    from blockqnn.space.cost import block_params

    if rule == "refuse" and block_params(block) == 0:
        raise ParameterFree(
            f"network.{measure}={target}: this block's layers hold no parameters (no "
            "convolution), so its network would spend the whole budget outside the block; "
            "network.parameter_free=allow trains it anyway"
        )
    limits = {}  # the config's (conf/model/network); fit_widths' defaults equal them
    if spec.get("max_width") is not None:
        limits["max_width"] = int(spec["max_width"])
    if spec.get("budget_tolerance") is not None:
        limits["tolerance"] = float(spec["budget_tolerance"])
    fit = fit_widths(
        block,
        measure,
        target,
        **limits,
        **{k: v for k, v in concrete.items() if k not in ("drop_path", "channels_last")},
    )
    concrete["widths"] = list(fit.widths)
    concrete["width"] = fit.widths[0]
    return concrete, fit
