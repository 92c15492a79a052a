"""Q-learning vs random search vs regularized evolution vs TPE at equal budgets on a real proxy
(real training): one Hydra multirun per strategy (seeds 0..n-1) into one sweep folder, then the
comparison report of that folder (``python -m blockqnn.report <sweep folder>``: best-so-far and
top-10 mean against episodes with 95% bands, paired tests against Q-learning). Prints one JSON
line last with each group's final figures.

usage: python bench/strategies.py [seeds] [episodes] [--data digits|fashion_mnist]

digits: the default search proxy (quick recipe, 3 epochs). fashion_mnist: Debian's
Fashion-MNIST, a class-stratified 5,000-image subset (4,000 train / 1,000 validation), one
epoch at batch 32: about 13 CPU-seconds per candidate. The sweep folder and its report
(comparison.html) are kept under bench/results/strategies_<data>/."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, parse_args, save_raw  # noqa: E402

# The per-strategy overrides for a 32-episode budget (evolution's and TPE's populations shrink).
AGENTS = {
    "qlearning": ["agent=qlearning"],
    "random": ["agent=random"],
    "evolution": ["agent=evolution", "agent.params.population=8", "agent.params.sample=3"],
    "tpe": ["agent=tpe", "agent.params.n_startup_trials=8"],
}
PROXIES = {
    "digits": [],
    "fashion_mnist": [
        "data=fashion_mnist",
        "data.subset=5000",
        "data.val_fraction=0.2",
        "recipe.epochs=1",
        "recipe.batch_size=32",
    ],
}


def main(seeds: int = 5, n: int = 32, data: str = "digits") -> dict:
    from blockqnn import compare

    per_iter = 8
    iters = n // per_iter
    last = max(1, iters - iters // 2 - iters // 4)
    schedule = f"[[1.0,{max(1, iters // 2)}],[0.5,{max(1, iters // 4)}],[0.1,{last}]]"
    common = [
        "logger=none",
        "executor=pool",
        f"agent.batch_size={per_iter}",
        "space.max_layers=6",
        f"agent.epsilon_schedule={schedule}",
        *PROXIES[data],
    ]
    sweep = ROOT / "bench" / "results" / f"strategies_{data}"
    shutil.rmtree(sweep, ignore_errors=True)
    for agent, extra in AGENTS.items():
        # An agent group resets the schedule and batch: the budget's come after it.
        cmd = [
            sys.executable,
            str(ROOT / "search.py"),
            "-m",
            *extra,
            *common,
            f"seed={','.join(map(str, range(seeds)))}",
            f"hydra.sweep.dir={sweep}/{agent}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    report = sweep / "comparison.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn.report",
            str(sweep),
            "-o",
            str(report),
            "--reference",
            "agent=qlearning",
        ],
        check=True,
        capture_output=True,
    )
    groups = compare.group_runs([compare.load(d) for d in compare.find_runs([sweep])])
    result = compare.compare(groups, "agent=qlearning")
    out: dict = {
        "bench": "strategies",
        "data": data,
        "proxy": PROXIES[data],
        "episodes": n,
        "seeds": seeds,
        "schedule": schedule,
        "report": str(report.relative_to(ROOT)),
    }
    for name, g in result["groups"].items():
        out[name] = {k: [round(v, 4) for v in g[k]] for k in ("best", "top10", "last_minus_first")}
        out[name].update(
            {f"p_{k}": g.get(f"p_{k}") for k in ("best", "top10") if not g["reference"]}
        )
    return out


if __name__ == "__main__":
    a = parse_args(__doc__, {"seeds": 5, "episodes": 32}, list(PROXIES))
    print(json.dumps(save_raw(f"strategies_{a.data}", main(a.seeds, a.episodes, a.data))))
