"""Ranking a search's measured blocks: by the mean reward over each block's evaluations (its
first training and its re-evaluations), re-evaluated leaders first (README "What the best block
is"). Pure functions over the store's rows: the outputs, the console, the reports and W&B share
them."""

from __future__ import annotations

import json

from blockqnn.result import is_measured
from blockqnn.search.store import evaluation_stats
from blockqnn.space.registry import parse_any

METRICS = (
    "reward",
    "reward_se",
    "evaluations",
    "reward_first",
    "accuracy",
    "flops",
    "params",
    "widths",
    "density",
    "status",
    "epochs",
    "restarts",
    "wall_time",
)


def ranked(
    episodes: list[dict], reevaluations: list[dict] = (), leaders_first: bool = True
) -> list[dict]:
    """Distinct measured blocks (by canonical key), best first, ranked by the mean reward over
    each block's measured evaluations: its first training in the search and its
    re-evaluations with fresh seeds (``search.reevaluate``). Each is its first trained episode
    with ``reward`` (and ``accuracy``) replaced by the means, plus ``reward_se`` (standard error
    of the mean), ``evaluations`` (their count) and ``reward_first`` (the reward the search first
    observed, the optimistic figure). The blocks evaluated the most times (the re-evaluated
    leaders, when there are re-evaluations) rank first, by their mean, then the others by theirs:
    a block's single lucky draw never outranks a leader's mean of several (``leaders_first``;
    without it, by the mean alone, as re-evaluation chooses whom to re-train). A leader is a block
    evaluated at least as often as the least-evaluated block that re-evaluation chose, so a block
    that an agent sampled again and again (evolution's fresh draws of a surviving child) leads
    by its mean once it has as many evaluations, never by its count alone. Predicted, failed and
    timed-out results never rank."""
    first: dict[str, dict] = {}
    for ep in episodes:
        if is_measured(ep) and not ep.get("reused") and ep["key"] not in first:
            first[ep["key"]] = ep
    for ep in episodes:  # a block whose training row is gone (never: reuse copies one) still ranks
        if is_measured(ep) and ep["key"] not in first:
            first[ep["key"]] = ep
    extra: dict[str, list[dict]] = {}
    for r in reevaluations:
        if is_measured(r) and r["key"] in first:
            extra.setdefault(r["key"], []).append(r)
    out = []
    for key, ep in first.items():
        stats = evaluation_stats([ep, *extra.get(key, [])])
        out.append(
            {
                **ep,
                **stats,
                "accuracy": stats["accuracy"]
                if stats["accuracy"] is not None
                else ep.get("accuracy"),
                "reward_first": ep["reward"],
            }
        )
    full = _leader_count(out, reevaluations) if leaders_first else 0
    return sorted(out, key=lambda e: (e["evaluations"] < full, -e["reward"], e["id"]))


def entry(ep: dict) -> dict:
    nsc = json.loads(ep["nsc"])
    return {
        "nsc": nsc,
        **parse_any(nsc).labels(),  # NB201: the cell's Op0..Op5 and arch string
        "key": ep["key"],
        "episode": ep["id"],
        **{m: ep.get(m) for m in METRICS},
    }


def _leader_count(blocks: list[dict], reevaluations: list[dict]) -> int:
    """The evaluations that make a block a leader: the fewest that any block chosen by
    re-evaluation (rounds >= 0) has; with none chosen, the most any block has."""
    chosen = {r["key"] for r in reevaluations if r.get("round", 0) >= 0}
    counts = [e["evaluations"] for e in blocks if e["key"] in chosen]
    if counts:
        return min(counts)
    return max((e["evaluations"] for e in blocks), default=1)
