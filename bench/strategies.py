"""Q-learning vs random vs regularized evolution vs TPE at equal budgets on a real proxy (real
training): best-found and top-10 mean reward against episodes over 5 seeds, with 95%
confidence intervals, and a PNG plot. Prints one JSON line last.

usage: python bench/strategies.py [seeds] [episodes] [--data digits|fashion_mnist]

digits: the default search proxy (quick recipe, 3 epochs). fashion_mnist: Debian's
Fashion-MNIST, a class-stratified 5,000-image subset (4,000 train / 1,000 validation), one
epoch at batch 32: about 13 CPU-seconds per candidate."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, episodes, mean_ci, parse_args, run_search  # noqa: E402

AGENTS = ["qlearning", "random", "evolution", "tpe"]
PROXIES = {
    "digits": [],
    "fashion_mnist": ["data=fashion_mnist", "data.subset=5000", "data.val_fraction=0.2", "recipe.epochs=1",
                      "recipe.batch_size=32"],
}


def curves(rows: list[dict]) -> tuple[list[float], list[float]]:
    best, top10, seen = [], [], []
    for r in rows:
        seen.append(r["reward"])
        best.append(max(seen))
        top = sorted(seen, reverse=True)[:10]
        top10.append(sum(top) / len(top))
    return best, top10


def main(seeds: int = 5, n: int = 32, data: str = "digits") -> dict:
    import matplotlib.pyplot as plt

    per_iter = 8
    iters = n // per_iter
    schedule = f"[[1.0,{max(1, iters // 2)}],[0.5,{max(1, iters // 4)}],[0.1,{max(1, iters - iters // 2 - iters // 4)}]]"
    common = ["logger=none", "executor=pool", f"agent.batch_size={per_iter}", "space.max_layers=6", *PROXIES[data]]
    out: dict = {"bench": "strategies", "data": data, "proxy": PROXIES[data], "episodes": n, "seeds": seeds, "schedule": schedule}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for agent in AGENTS:
        extra = ["agent.params.population=8", "agent.params.sample=3"] if agent == "evolution" else []
        if agent == "tpe":
            extra = ["agent.params.n_startup_trials=8"]
        bests, tops = [], []
        for seed in range(seeds):
            folder, _ = run_search([*common, f"agent={agent}", f"seed={seed}", f"agent.epsilon_schedule={schedule}",
                                    *extra])
            b, t = curves(episodes(folder))
            bests.append(b)
            tops.append(t)
        final_best = mean_ci([b[-1] for b in bests])
        final_top = mean_ci([t[-1] for t in tops])
        out[agent] = {"best_mean": round(final_best[0], 4), "best_ci95": round(final_best[1], 4),
                      "top10_mean": round(final_top[0], 4), "top10_ci95": round(final_top[1], 4)}
        for ax, series in ((axes[0], bests), (axes[1], tops)):
            m = [mean_ci([s[i] for s in series]) for i in range(n)]
            xs = range(1, n + 1)
            ax.plot(xs, [v for v, _ in m], label=agent)
            ax.fill_between(xs, [v - c for v, c in m], [v + c for v, c in m], alpha=0.15)
    for ax, title in zip(axes, ("best reward found", "mean of the top-10 rewards")):
        ax.set(xlabel="episodes", ylabel="reward", title=f"{data}: {title} ({seeds} seeds, 95% CI)")
        ax.legend()
    fig.tight_layout()
    png = ROOT / "bench" / ("strategies.png" if data == "digits" else f"strategies_{data}.png")
    fig.savefig(png, dpi=100)
    out["plot"] = str(png.relative_to(ROOT))
    return out


if __name__ == "__main__":
    a = parse_args(__doc__, {"seeds": 5, "episodes": 32}, list(PROXIES))
    print(json.dumps(main(a.seeds, a.episodes, a.data)))
