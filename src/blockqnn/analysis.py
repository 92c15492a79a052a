"""Figures of a finished (or running) search, read from its run folder: used by
notebooks/analysis.ipynb and by ``python -m blockqnn.report``."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt

from blockqnn.errors import ConfigError
from blockqnn.search.outputs import ranked
from blockqnn.search.store import parts_of, read_agent_state
from blockqnn.space.nsc import SHORT_NAMES, Block, LayerType


def load_run(run_dir: str | Path) -> dict:
    """Episodes and agent state of a run folder (read-only)."""
    run_dir = Path(run_dir)
    db = run_dir / "search.db"
    if not db.is_file():
        raise ConfigError(f"{run_dir} has no search.db: not a search run folder")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        episodes = [dict(r) for r in con.execute("SELECT * FROM episodes ORDER BY id")]
        state, parts = read_agent_state(con) or ({}, {})
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{db} cannot be read: {exc}") from None
    finally:
        con.close()
    agent = state.get("agent")
    parts = parts_of(parts, "agent")
    if agent and parts:  # the agent's whole state, as its state_dict() gives it
        from blockqnn.agent import AGENTS

        whole = AGENTS[agent["name"]](max_layers=agent["max_layers"], seed=agent["seed"])
        whole.restore(agent, parts)
        agent = whole.state_dict()
    return {"run_dir": run_dir, "episodes": episodes, "agent": agent, "predictor": state.get("predictor")}


def finished(run: dict) -> list[dict]:
    return [e for e in run["episodes"] if e["status"] != "running" and e["reward"] is not None]


def fig_rewards(run: dict):
    eps = finished(run)
    fig, ax = plt.subplots(figsize=(8, 4))
    if eps:
        sc = ax.scatter([e["id"] for e in eps], [e["reward"] for e in eps], c=[e["epsilon"] for e in eps],
                        cmap="viridis", vmin=0, vmax=1, s=14)
        best, top = [], float("-inf")
        for e in eps:
            top = max(top, e["reward"])
            best.append(top)
        ax.plot([e["id"] for e in eps], best, color="crimson", label="best so far")
        fig.colorbar(sc, ax=ax, label="epsilon")
        ax.legend(loc="lower right")
    ax.set(xlabel="episode", ylabel="reward", title="Reward per episode")
    fig.tight_layout()
    return fig


def layer_type_shares(run: dict) -> dict[float, dict[str, float]]:
    """For each epsilon stage, the share of each layer type among the sampled layers."""
    by_eps: dict[float, Counter] = {}
    for e in run["episodes"]:
        counts = by_eps.setdefault(e["epsilon"], Counter())
        for layer in Block.parse(e["nsc"]).body:
            counts[SHORT_NAMES[LayerType(layer.type)]] += 1
    return {eps: {k: v / sum(c.values()) for k, v in c.items()} for eps, c in sorted(by_eps.items(), reverse=True)}


def fig_layer_types(run: dict):
    shares = layer_type_shares(run)
    names = [SHORT_NAMES[t] for t in LayerType if t != LayerType.TERMINAL]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{eps:g}" for eps in shares]
    bottom = [0.0] * len(shares)
    for name in names:
        vals = [shares[eps].get(name, 0.0) for eps in shares]
        ax.bar(labels, vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(xlabel="epsilon stage (exploration falls to the right)", ylabel="share of layers",
           title="Layer types chosen per epsilon stage")
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
    ax.set(xlabel="MFLOPs (whole proxy network, one image)", ylabel="validation accuracy",
           title="Accuracy against cost")
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


def fig_q_values(run: dict):
    items = q_summary(run)
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    if items:
        labels = [Block.parse([json.loads(a)]).body[0].label + f" <- {json.loads(a)[3]}" for a, _ in items]
        ax.barh(labels[::-1], [v for _, v in items][::-1], color="#3a86ff")
        ax.set_xlabel("Q(start, first layer)")
    else:
        ax.text(0.5, 0.5, "no Q-learning state", ha="center", va="center")
    ax.set_title("Learned Q-values of the first layer")
    fig.tight_layout()
    return fig


def top_blocks(run: dict, k: int = 5) -> list[dict]:
    return ranked(run["episodes"])[:k]
