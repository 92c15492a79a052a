"""A search's outputs in its run folder: best_block.json/png, topk.json, rewards.png."""

from __future__ import annotations

import json
from pathlib import Path

from blockqnn.space.nsc import Block

METRICS = ("reward", "accuracy", "flops", "params", "density", "status", "epochs", "restarts", "wall_time")


def ranked(episodes: list[dict]) -> list[dict]:
    """Distinct blocks (by canonical key), best reward first."""
    best: dict[str, dict] = {}
    for ep in episodes:
        if ep["status"] == "running" or ep["reward"] is None or ep.get("predicted"):
            continue  # only measured rewards rank; predicted ones never reach best/top-k
        if ep["key"] not in best or ep["reward"] > best[ep["key"]]["reward"]:
            best[ep["key"]] = ep
    return sorted(best.values(), key=lambda e: (-e["reward"], e["id"]))


def entry(ep: dict) -> dict:
    return {"nsc": json.loads(ep["nsc"]), "key": ep["key"], "episode": ep["id"],
            **{m: ep.get(m) for m in METRICS}}


def write_outputs(run_dir: Path, episodes: list[dict], topk: int = 10) -> dict | None:
    from blockqnn.space.draw import draw_block

    top = ranked(episodes)
    if not top:
        return None
    best = entry(top[0])
    (run_dir / "best_block.json").write_text(json.dumps(best, indent=2) + "\n")
    (run_dir / "topk.json").write_text(json.dumps([entry(e) for e in top[:topk]], indent=2) + "\n")
    draw_block(Block.parse(best["nsc"]), run_dir / "best_block.png",
               title=f"best block: reward {best['reward']:.4f}, accuracy {best['accuracy']}")
    plot_rewards(episodes, run_dir / "rewards.png")
    return best


def plot_rewards(episodes: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    from blockqnn.analysis import fig_rewards

    fig = fig_rewards(episodes)
    fig.savefig(path, dpi=110)
    plt.close(fig)
