"""A search's outputs in its run folder: best_block.json/png/svg, best_network.png/svg (the
network the best block is stacked into), topk.json, rewards.png."""

from __future__ import annotations

import json
from pathlib import Path

from blockqnn.search.ranking import entry, ranked
from blockqnn.space.draw import draw_network
from blockqnn.space.registry import draw_arch, parse_any


def write_outputs(
    run_dir: Path,
    episodes: list[dict],
    topk: int = 10,
    reevaluations: list[dict] = (),
    network: dict | None = None,
) -> dict | None:
    """Write the outputs; ``network``: the network section with the data's shape
    (:func:`blockqnn.data.shapes.network_spec`), for best_network.png (none without it)."""
    top = ranked(episodes, reevaluations)
    if not top:
        return None
    best = entry(top[0])
    (run_dir / "best_block.json").write_text(json.dumps(best, indent=2) + "\n")
    (run_dir / "topk.json").write_text(json.dumps([entry(e) for e in top[:topk]], indent=2) + "\n")
    acc = "-" if best["accuracy"] is None else f"{best['accuracy']:.4f}"
    n = best["evaluations"]
    arch = parse_any(best["nsc"])
    draw_arch(
        arch,
        run_dir / "best_block.png",
        title=f"best block: reward {best['reward']:.4f}"
        + (f" ± {best['reward_se']:.4f} (mean of {n})" if n > 1 else "")
        + f", accuracy {acc}",
    )
    if network is not None and arch.has_network:
        draw_network(arch, network, run_dir / "best_network.png")
    plot_rewards(episodes, run_dir / "rewards.png")
    return best


def plot_rewards(episodes: list[dict], path: Path) -> None:
    # Lazy: blockqnn.analysis imports pyplot, a second of start-up the master needs only here.
    import matplotlib.pyplot as plt

    from blockqnn.analysis import fig_rewards

    fig = fig_rewards(episodes)
    fig.savefig(path, dpi=110)
    plt.close(fig)
