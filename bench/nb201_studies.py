"""NAS-Bench-201 studies: our strategies against the field on a table nobody here wrote.

Every search is a real run of the search loop (``experiment=nb201``: space=nb201,
evaluator=nb201, the store, dedupe, re-evaluation) in ``--workers`` processes; each finished
search is appended at once to ``bench/results/nb201/runs.jsonl``, so an interrupted study
continues where it stopped (``--fresh`` starts over).

Budgets, in queries of the table (each sampled cell is one query, a reused one too; each
re-evaluation is one): 100 = 94 episodes + top 3 x 2 re-evaluations; 300 = 290 + 5 x 2;
1,000 = 980 + 10 x 2. Each group's epsilon schedule (Q-learning) is scaled to its episodes;
evolution's children that repeat a known cell are fresh draws within the episodes; random
search and TPE spend every episode on a new draw. Unique queries (trainings + re-evaluations,
reused episodes left out) are recorded too.

Studies (``--only``):

* ``tune``: Q-learning variants inside the paper's method (state, learning rate, q_init,
  replay, shaping, exploration schedule, count bonus) on CIFAR-10 only, at 300 queries, on
  tuning seeds 1000+ that the main study never uses. The best becomes ``agent=qlearning_nb201``.
* ``main``: the pre-registered groups (GROUPS) at 100, 300 and 1,000 queries on CIFAR-10,
  CIFAR-100 and ImageNet16-120 (the last two held out: nothing was tuned on them), seeds 0..N-1.

Per search: the returned cell (best_block.json) scored at its mean over the table's seeds,
its regret to the optimum, whether it is the optimum; the incumbent curve (the best single
draw so far, scored at its seed mean) against queries; unique queries.

usage: python bench/nb201_studies.py [--only tune main] [--seeds 100] [--workers 2] [--fresh]
       python bench/nb201_studies.py --report      (aggregate: tables, tests, figures; JSON last)
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT, compose_search, mean_ci  # noqa: E402

from blockqnn.compare import holm  # noqa: E402

OUT = ROOT / "bench" / "results" / "nb201"
RUNS = OUT / "runs.jsonl"
DATASETS = ("cifar10", "cifar100", "imagenet16")
#: queries -> (episodes, re-evaluated top, repeats each)
BUDGETS = {100: (94, 3, 2), 300: (290, 5, 2), 1000: (980, 10, 2)}
CURVE = (10, 30, 100, 300, 1000)

#: The pre-registered groups of the main study (agent overrides; the budget's are added).
GROUPS = {
    "qlearning_paper": ["agent=qlearning_paper"],
    "qlearning": ["agent=qlearning"],
    "qlearning_nb201": ["agent=qlearning_nb201", "SCHEDULE=linear"],
    "random": ["agent=random"],
    "evolution": ["agent=evolution", "agent.params.population=10", "agent.params.sample=3"],
    "tpe": ["agent=tpe"],
}
#: The primary comparison, declared before the main study ran (one-sided: Q-learning better).
PRIMARY = ("qlearning_nb201", "random", 300, "cifar10")

#: Q-learning variants of the tuning study (CIFAR-10, 300 queries, seeds 1000+).
TUNE = {
    "paper": ["agent=qlearning_paper"],
    "ours": ["agent=qlearning"],
    "paper_state_step": ["agent=qlearning_paper", "agent.params.state=step"],
    "paper_state_partial": ["agent=qlearning_paper", "agent.params.state=partial"],
    "ours_state_step": ["agent=qlearning", "agent.params.state=step"],
    "ours_state_partial": ["agent=qlearning", "agent.params.state=partial"],
    "step_lr0.5": ["agent=qlearning", "agent.params.state=step", "agent.params.learning_rate=0.5"],
    "step_lr0.01_q1": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.learning_rate=0.01",
    ],
    "step_q0.5": ["agent=qlearning", "agent.params.state=step", "agent.params.q_init=0.5"],
    "step_noshaping": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.reward_shaping=false",
    ],
    "step_replay16": ["agent=qlearning", "agent.params.state=step", "agent.params.replay_size=16"],
    "step_replay256": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.replay_size=256",
    ],
    "step_bonus0.01": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.count_bonus=0.01",
    ],
    "step_short_random": ["agent=qlearning", "agent.params.state=step", "SCHEDULE=linear"],
    "ours_short_random": ["agent=qlearning", "SCHEDULE=linear"],
    "paper_short_random": ["agent=qlearning_paper", "SCHEDULE=linear"],
    # Round 2 (after round 1's leads: the step state, the short random phase, lr 0.5, 256 replays)
    "step_short_random_lr0.5": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.learning_rate=0.5",
        "SCHEDULE=linear",
    ],
    "step_short_random_replay256": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.replay_size=256",
        "SCHEDULE=linear",
    ],
    "step_short_random_bonus0.01": [
        "agent=qlearning",
        "agent.params.state=step",
        "agent.params.count_bonus=0.01",
        "SCHEDULE=linear",
    ],
    "step_greedier": ["agent=qlearning", "agent.params.state=step", "SCHEDULE=fast"],
}
TUNE_SEEDS = range(1000, 1050)


def overrides(group: list[str], budget: int, dataset: str) -> list[str]:
    """The search's overrides: ``experiment=nb201`` at the budget, the group's own, and the
    epsilon schedule scaled to the budget's episodes: the paper's shares (``paper:<n>``) unless
    the group says ``SCHEDULE=<name>`` (``linear``: ten levels 1.0, 0.9, ..., 0.1 of equal length;
    ``fast``: 5% at 1.0, then 0.5, 0.2, 0.1, 0.05 of equal length)."""
    episodes, top, repeats = BUDGETS[budget]
    schedule = f"agent.epsilon_schedule=paper:{episodes}"
    rest = []
    for o in group:
        if o.startswith("SCHEDULE="):
            name = o.split("=", 1)[1]
            if name == "fast":
                first = max(1, episodes // 20)
                each, extra = divmod(episodes - first, 4)
                pairs = [[1.0, first]] + [
                    [eps, each + (1 if i < extra else 0)]
                    for i, eps in enumerate((0.5, 0.2, 0.1, 0.05))
                ]
                schedule = "agent.epsilon_schedule=" + json.dumps(pairs).replace(" ", "")
            else:
                schedule = f"agent.epsilon_schedule={name}:{episodes}"
        else:
            rest.append(o)
    return [
        "experiment=nb201",
        "logger=none",
        f"evaluator.dataset={dataset}",
        *rest,
        schedule,
        "agent.batch_size=1",
        f"search.reevaluate.top={top}",
        f"search.reevaluate.repeats={repeats}",
        "search.reevaluate.max_rounds=1",
    ]


def run_one(task: dict) -> dict:
    """One search in a temporary folder; its scores."""
    from rich.console import Console

    from blockqnn.evaluator.nb201 import optimum, seed_mean
    from blockqnn.search.loop import Search
    from blockqnn.search.store import read_run

    cfg = compose_search(*task["overrides"], f"seed={task['seed']}")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        Search(cfg, Path(tmp), console=Console(file=io.StringIO())).run()
        best = json.loads((Path(tmp) / "best_block.json").read_text())
        saved = read_run(Path(tmp), agent=False)
    wall = time.perf_counter() - start
    eps, reevals = saved["episodes"], saved.get("reevaluations", [])
    dataset = task["dataset"]
    opt_key, opt = optimum(dataset)
    value = seed_mean(dataset, best["key"])
    # The incumbent after q queries: the best single draw among the first q queries (episodes
    # in order, each re-evaluation where it ran), scored at its seed mean.
    curve, best_draw, best_key, q = {}, -1.0, None, 0
    order = [(e["id"], 0, e) for e in eps] + [
        (r["after_episode"] + (0.5 if r["round"] < 0 else 1.0), 1, r) for r in reevals
    ]
    for _, _, row in sorted(order, key=lambda t: (t[0], t[1])):
        q += 1
        if row.get("reward") is not None and row["reward"] > best_draw:
            best_draw, best_key = row["reward"], row["key"]
        if q in CURVE:
            curve[q] = seed_mean(dataset, best_key)
    return {
        **{k: task[k] for k in ("study", "group", "dataset", "budget", "seed")},
        "key": best["key"],
        "arch": best["arch"],
        "value": value,
        "regret": opt - value,
        "optimum": best["key"] == opt_key,
        "reward_mean": best["reward"],
        "reward_first": best["reward_first"],
        "queries": len(eps) + len(reevals),
        "unique_queries": sum(1 for e in eps if not e["reused"]) + len(reevals),
        "curve": curve,
        "wall_s": round(wall, 3),
    }


def tasks(only: list[str], seeds: int) -> list[dict]:
    out = []
    if "tune" in only:
        for name, group in TUNE.items():
            for seed in TUNE_SEEDS:
                out.append(
                    {
                        "study": "tune",
                        "group": name,
                        "dataset": "cifar10",
                        "budget": 300,
                        "seed": seed,
                        "overrides": overrides(group, 300, "cifar10"),
                    }
                )
    if "main" in only:
        # Budget-major, so a partial run has every group at the smaller budgets.
        for budget in BUDGETS:
            for seed in range(seeds):
                for dataset in DATASETS:
                    for name, group in GROUPS.items():
                        out.append(
                            {
                                "study": "main",
                                "group": name,
                                "dataset": dataset,
                                "budget": budget,
                                "seed": seed,
                                "overrides": overrides(group, budget, dataset),
                            }
                        )
    return out


def _ident(r: dict) -> tuple:
    return (r["study"], r["group"], r["dataset"], r["budget"], r["seed"])


def load() -> list[dict]:
    if not RUNS.exists():
        return []
    return [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]


def run(only: list[str], seeds: int, workers: int, fresh: bool) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    if fresh and RUNS.exists():
        RUNS.unlink()
    done = {_ident(r) for r in load()}
    todo = [t for t in tasks(only, seeds) if _ident(t) not in done]
    print(f"{len(todo)} searches to run ({len(done)} done)", file=sys.stderr, flush=True)
    start = time.time()
    with mp.get_context("spawn").Pool(workers) as pool, RUNS.open("a") as f:
        for i, result in enumerate(pool.imap(run_one, todo, chunksize=4), 1):
            f.write(json.dumps(result) + "\n")
            f.flush()
            if i % 50 == 0 or i == len(todo):
                rate = i / (time.time() - start)
                print(
                    f"{i}/{len(todo)} searches, {rate:.2f}/s, "
                    f"{(len(todo) - i) / rate / 60:.1f} min left",
                    file=sys.stderr,
                    flush=True,
                )


# ---------------------------------------------------------------------------- aggregation
def _welch(a: np.ndarray, b: np.ndarray, alternative: str = "two-sided") -> float:
    """Welch's t-test p-value (independent searches: seeds do not pair across strategies)."""
    from scipy import stats

    if len(a) < 3 or len(b) < 3:
        return float("nan")
    return float(stats.ttest_ind(a, b, equal_var=False, alternative=alternative).pvalue)


def report() -> dict:
    from blockqnn.evaluator.nb201 import optimum

    rows = load()
    summary: dict = {"tune": {}, "main": {}}
    tune = [r for r in rows if r["study"] == "tune"]
    for name in TUNE:
        vals = np.array([r["value"] for r in tune if r["group"] == name]) * 100
        if len(vals):
            m, h = mean_ci(vals)
            hits = np.mean([r["optimum"] for r in tune if r["group"] == name])
            summary["tune"][name] = {"n": len(vals), "mean": m, "ci": h, "optimum_share": hits}
    main = [r for r in rows if r["study"] == "main"]
    family = {}
    for dataset in DATASETS:
        for budget in BUDGETS:
            cell = {}
            for name in GROUPS:
                sel = [
                    r
                    for r in main
                    if r["group"] == name and r["dataset"] == dataset and r["budget"] == budget
                ]
                if not sel:
                    continue
                vals = np.array([r["value"] for r in sel]) * 100
                m, h = mean_ci(vals)
                cell[name] = {
                    "n": len(sel),
                    "mean": m,
                    "ci": h,
                    "regret": optimum(dataset)[1] * 100 - m,
                    "optimum_share": float(np.mean([r["optimum"] for r in sel])),
                    "unique_queries": float(np.mean([r["unique_queries"] for r in sel])),
                    "curve": {
                        q: float(np.mean([r["curve"][str(q)] for r in sel if str(q) in r["curve"]]))
                        * 100
                        for q in CURVE
                        if any(str(q) in r["curve"] for r in sel)
                    },
                    "values": vals.tolist(),
                }
            summary["main"][f"{dataset}@{budget}"] = cell
            ref = cell.get("qlearning_nb201")
            for other in ("random", "evolution", "qlearning_paper", "tpe"):
                if ref and other in cell:
                    key = (dataset, budget, other)
                    alt = (
                        "greater"
                        if (dataset, budget, other) == PRIMARY[3:] + (other,)
                        else "two-sided"
                    )
                    family[key] = _welch(
                        np.array(ref["values"]), np.array(cell[other]["values"]), alt
                    )
    primary_key = (PRIMARY[3], PRIMARY[2], PRIMARY[1])
    primary = None
    if primary_key in family:
        a = np.array(summary["main"][f"{PRIMARY[3]}@{PRIMARY[2]}"][PRIMARY[0]]["values"])
        b = np.array(summary["main"][f"{PRIMARY[3]}@{PRIMARY[2]}"][PRIMARY[1]]["values"])
        primary = {
            "comparison": f"{PRIMARY[0]} > {PRIMARY[1]} at {PRIMARY[2]} queries on {PRIMARY[3]}",
            "difference_pp": float(a.mean() - b.mean()),
            "ci_pp": _ci_diff(a, b),
            "p_one_sided": _welch(a, b, "greater"),
        }
    secondary = {k: p for k, p in family.items() if k != primary_key}
    adjusted = holm(secondary)
    summary["primary"] = primary
    summary["secondary"] = {
        f"{d}@{b} qlearning_nb201 vs {o}": {
            "p": secondary[(d, b, o)],
            "p_holm": adjusted.get((d, b, o)),
        }
        for (d, b, o) in secondary
    }
    for cell in summary["main"].values():
        for g in cell.values():
            g.pop("values", None)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _figure(main)
    return summary


def _ci_diff(a: np.ndarray, b: np.ndarray) -> list[float]:
    """95% Welch interval of mean(a) - mean(b)."""
    from scipy import stats

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    h = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    d = a.mean() - b.mean()
    return [float(d - h), float(d + h)]


def _figure(main: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from blockqnn.evaluator.nb201 import optimum

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, dataset in zip(axes, DATASETS):
        for name in GROUPS:
            sel = [
                r
                for r in main
                if r["group"] == name and r["dataset"] == dataset and r["budget"] == 1000
            ]
            if not sel:
                continue
            qs = [q for q in CURVE if all(str(q) in r["curve"] for r in sel)]
            ys = [np.mean([r["curve"][str(q)] for r in sel]) * 100 for q in qs]
            ax.plot(qs, ys, marker="o", label=f"{name} (n={len(sel)})")
        ax.axhline(optimum(dataset)[1] * 100, color="black", lw=0.8, ls=":", label="optimum")
        ax.set(
            xscale="log",
            xlabel="queries",
            ylabel="incumbent's mean validation accuracy (%)",
            title=f"NAS-Bench-201 {dataset} (1,000-query searches)",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=110)
    plt.close(fig)


#: NB201 paper, Table 5 (as EVALUATION.md cites it; a time budget and the 12-epoch signal):
#: validation accuracy on CIFAR-10, test accuracy elsewhere (not comparable to ours in level).
PUBLISHED = {
    "cifar10": "REA 91.19, REINFORCE 91.09, RS 90.93, BOHB 90.82 (validation)",
    "cifar100": "REA 71.84, REINFORCE 71.71, RS 71.04, BOHB 70.85 (test)",
    "imagenet16": "REA 45.54, REINFORCE 45.24, RS 44.57, BOHB 44.42 (test)",
}


def markdown() -> str:
    """BENCHMARKS.md's tables from bench/results/nb201/summary.json."""
    summary = json.loads((OUT / "summary.json").read_text())
    lines = []
    for dataset in DATASETS:
        held = "" if dataset == "cifar10" else " (held out)"
        lines += [
            f"**{dataset}{held}**: returned cell's seed-mean validation accuracy (mean +- 95% "
            "half-width over searches), regret to the optimum, share returning the optimum, "
            "unique queries",
            "",
            "| group | " + " | ".join(f"{b:,} queries" for b in BUDGETS) + " |",
            "|---|" + "---|" * len(BUDGETS),
        ]
        for name in GROUPS:
            cells = []
            for budget in BUDGETS:
                g = summary["main"].get(f"{dataset}@{budget}", {}).get(name)
                cells.append(
                    "-"
                    if g is None
                    else f"{g['mean']:.2f} +- {g['ci']:.2f} (regret {g['regret']:.2f}, "
                    f"{g['optimum_share'] * 100:.0f}%, {g['unique_queries']:.0f} uq; n={g['n']})"
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"Published (NB201, Table 5): {PUBLISHED[dataset]}.", ""]
    p = summary.get("primary")
    if p:
        lines.append(
            f"Primary ({p['comparison']}): {p['difference_pp']:+.3f} pp, 95% CI "
            f"[{p['ci_pp'][0]:+.3f}, {p['ci_pp'][1]:+.3f}], one-sided p = {p['p_one_sided']:.2g}."
        )
    lines += ["", "| secondary comparison | p | p (Holm) |", "|---|---|---|"]
    for k, v in summary.get("secondary", {}).items():
        lines.append(f"| {k} | {v['p']:.2g} | {v['p_holm']:.2g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=["main"], choices=["tune", "main"])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print BENCHMARKS.md's tables")
    args = parser.parse_args()
    if args.markdown:
        print(markdown())
        return
    if not args.report:
        run(args.only, args.seeds, args.workers, args.fresh)
    summary = report()
    print(json.dumps({"tune": summary["tune"], "primary": summary["primary"]}))


if __name__ == "__main__":
    main()
