"""Figures of a finished (or running) search, read from its run folder: used by
notebooks/analysis.ipynb and by ``python -m blockqnn.report``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from blockqnn.agent import AGENTS
from blockqnn.errors import BlockError
from blockqnn.result import is_measured
from blockqnn.search.ranking import ranked
from blockqnn.search.store import parts_of, read_run
from blockqnn.space.nsc import Block
from blockqnn.space.registry import SPACES, parse_any


def load_run(run_dir: str | Path) -> dict:
    """Episodes and agent state of a run folder (read-only)."""
    run_dir = Path(run_dir)
    saved = read_run(run_dir)
    episodes = saved["episodes"]
    state, parts = saved["agent"] or ({}, {})
    agent = state.get("agent")
    parts = parts_of(parts, "agent")
    if agent and parts:  # the agent's whole state, as its state_dict() gives it
        space = dict(agent.get("space") or {"name": "nsc", "max_layers": agent["max_layers"]})
        whole = AGENTS[agent["name"]](space=SPACES[space.pop("name")](**space), seed=agent["seed"])
        whole.restore(agent, parts)
        agent = whole.state_dict()
    return {
        "run_dir": run_dir,
        "episodes": episodes,
        "reevaluations": saved.get("reevaluations", []),
        "agent": agent,
        "predictor": state.get("predictor"),
    }


def finished(run: dict | list[dict]) -> list[dict]:
    """The finished episodes the agent was taught (measured or predicted; failed ones were never
    taught), of a run (:func:`load_run`) or a list of episodes."""
    episodes = run["episodes"] if isinstance(run, dict) else run
    return [
        e for e in episodes if e["status"] not in ("running", "failed") and e["reward"] is not None
    ]


def fig_rewards(run: dict | list[dict]):
    """Reward per episode coloured by epsilon, the best so far, and the mean reward of each
    iteration with a band of one standard deviation (the paper's figure). Readable at the paper's
    11,392 episodes: the dots shrink and fade as their number grows, and are rasterised."""
    eps = finished(run)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if eps:
        n = len(eps)
        size, alpha = (14, 0.9) if n <= 500 else (4, 0.5) if n <= 3000 else (2, 0.25)
        sc = ax.scatter(
            [e["id"] for e in eps],
            [e["reward"] for e in eps],
            c=[e["epsilon"] for e in eps],
            cmap="viridis",
            vmin=0,
            vmax=1,
            s=size,
            alpha=alpha,
            linewidths=0,
            rasterized=True,
        )
        by_iter: dict[int, list[dict]] = {}
        for e in eps:
            by_iter.setdefault(e["iteration"], []).append(e)
        if len(by_iter) > 1:
            x = [sum(e["id"] for e in v) / len(v) for _, v in sorted(by_iter.items())]
            r = [np.array([e["reward"] for e in v]) for _, v in sorted(by_iter.items())]
            m = np.array([a.mean() for a in r])
            sd = np.array([a.std() for a in r])
            ax.fill_between(
                x,
                m - sd,
                m + sd,
                color="black",
                alpha=0.15,
                linewidth=0,
                label="iteration mean ± sd",
            )
            ax.plot(x, m, color="black", linewidth=1.2)
        best_x, best, top = [], [], float("-inf")
        for e in eps:
            if is_measured(e):  # predicted, failed and timed-out rewards never make the best
                top = max(top, e["reward"])
            if top > float("-inf"):
                best_x.append(e["id"])
                best.append(top)
        ax.plot(best_x, best, color="crimson", label="best measured so far")
        cb = fig.colorbar(sc, ax=ax, label="epsilon")
        cb.solids.set_alpha(1)
        ax.legend(loc="lower right", fontsize=8)
    ax.set(xlabel="episode", ylabel="reward", title="BlockQNN search: reward per episode")
    fig.tight_layout()
    return fig


def layer_type_shares(run: dict) -> dict[float, dict[str, float]]:
    """For each epsilon stage, the share of each layer type among the sampled layers."""
    by_eps: dict[float, Counter] = {}
    for e in run["episodes"]:
        counts = by_eps.setdefault(e["epsilon"], Counter())
        counts.update(parse_any(e["nsc"]).parts())
    return {
        eps: {k: v / sum(c.values()) for k, v in c.items()}
        for eps, c in sorted(by_eps.items(), reverse=True)
    }


def fig_layer_types(run: dict):
    shares = layer_type_shares(run)
    names = sorted({name for c in shares.values() for name in c})
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{eps:g}" for eps in shares]
    bottom = [0.0] * len(shares)
    for name in names:
        vals = [shares[eps].get(name, 0.0) for eps in shares]
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(
        xlabel="epsilon stage (exploration falls to the right)",
        ylabel="share of layers",
        title="Layer types chosen per epsilon stage",
    )
    ax.legend(ncol=4, fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (cost, accuracy) not dominated by a cheaper and at least as accurate one."""
    front, best = [], float("-inf")
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def fig_accuracy_flops(run: dict):
    eps = [e for e in finished(run) if e["accuracy"] is not None and e["flops"]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if eps:
        pts = [(e["flops"] / 1e6, e["accuracy"]) for e in eps]
        ax.scatter(*zip(*pts), s=12, alpha=0.6, label="blocks")
        front = pareto(pts)
        ax.plot(*zip(*front), color="crimson", marker="o", label="Pareto front")
        ax.set_xscale("log")
        ax.legend()
    ax.set(
        xlabel="MFLOPs (whole proxy network, one image)",
        ylabel="validation accuracy",
        title="Accuracy against cost",
    )
    fig.tight_layout()
    return fig


def q_summary(run: dict, k: int = 10) -> list[tuple[str, float]]:
    """The agent's highest Q-values for the first layer (the start state), best first."""
    state = run["agent"]
    if not state or state.get("name") != "qlearning":
        return []
    start = [row for s, row in state["q"] if s == [0, 0, 0, 0, 0]]
    if not start:
        return []
    items = sorted(((json.dumps(a), v) for a, v in start[0]), key=lambda t: -t[1])
    return items[:k]


def _first_label(action: list) -> str:
    """A first decision's label: an NSC layer with its input, else the decision itself."""
    try:
        return Block.parse([action]).body[0].label + f" <- {action[3]}"
    except BlockError:
        return str(action)


def fig_q_values(run: dict):
    items = q_summary(run)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    if items:
        labels = [_first_label(json.loads(a)) for a, _ in items]
        ax.barh(labels[::-1], [v for _, v in items][::-1], color="#3a86ff")
        ax.set_xlabel("Q(start, first layer)")
    else:
        ax.text(0.5, 0.5, "no Q-learning state", ha="center", va="center")
    ax.set_title("Learned Q-values of the first layer")
    fig.tight_layout()
    return fig


def top_blocks(run: dict, k: int = 5) -> list[dict]:
    return ranked(run["episodes"], run.get("reevaluations", []))[:k]
