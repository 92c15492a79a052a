"""The paper's comparison through the BlockQNN-Bench surrogate: Q-learning against random
search, regularized evolution and TPE at several budgets, 10 seeds each, every search a real
run of the search loop (synchronous iterations, dedupe, store) with ``evaluator=surrogate``.
Per strategy and budget: the best reward found and the mean of the 10 best distinct blocks
(mean +- 95% CI over seeds), the mean reward of the last epsilon stage, and a paired
Wilcoxon signed-rank test of Q-learning against each baseline on the best reward (seeds pair:
the same seed gives every strategy the same surrogate noise). Prints one JSON line last.

usage: python bench/surrogate_strategies.py [seeds] [--budgets 80 496 ...]
Budgets and their schedules (what a user would pick; x batch 8 for 80, x 16 otherwise):
  80: short;  496: [[1.0,15],[0.5,8],[0.1,8]];  2000: [[1.0,60],[0.7,15],[0.4,25],[0.1,25]];
  11392: paper (x 64, the paper's Q-learning constants)."""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import mean_ci  # noqa: E402
from agent_ablation import run  # noqa: E402

BUDGETS = {
    80: ["agent.epsilon_schedule=short", "agent.batch_size=8"],
    496: ["agent.epsilon_schedule=[[1.0,15],[0.5,8],[0.1,8]]", "agent.batch_size=16"],
    2000: ["agent.epsilon_schedule=[[1.0,60],[0.7,15],[0.4,25],[0.1,25]]", "agent.batch_size=16"],
    11392: ["experiment=paper", "evaluator=surrogate"],
}
STRATEGIES = {"qlearning": [], "random": ["agent=random"], "evolution": ["agent=evolution"], "tpe": ["agent=tpe"]}


def main() -> dict:
    from scipy.stats import wilcoxon

    ap = argparse.ArgumentParser()
    ap.add_argument("seeds", type=int, nargs="?", default=10)
    ap.add_argument("--budgets", type=int, nargs="*", default=[80, 496])
    ap.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    args = ap.parse_args()
    out = {"bench": "surrogate_strategies", "seeds": args.seeds, "results": {}}
    t = time.perf_counter()
    for budget in args.budgets:
        common = ["evaluator=surrogate", "logger=none", *BUDGETS[budget]]
        if budget != 11392:
            common.append("space.max_layers=10")  # the bench proxy's space
        per: dict = {}
        for name in args.strategies:
            extra = STRATEGIES[name]
            if budget == 11392 and name != "qlearning":  # keep the paper's schedule and batch, other agent
                extra = [*extra, "agent.epsilon_schedule=paper", "agent.batch_size=64"]
            per[name] = [run(extra, s, common) for s in range(args.seeds)]
            print(budget, name, json.dumps({k: round(mean_ci([r[k] for r in per[name]])[0], 4)
                                            for k in ("best", "top10", "last")}), file=sys.stderr)
        res = {}
        for name, runs in per.items():
            res[name] = {k: [round(v, 4) for v in mean_ci([r[k] for r in runs])] for k in ("best", "top10", "last")}
            if name != "qlearning" and "qlearning" in per and args.seeds >= 5:
                q = [r["best"] for r in per["qlearning"]]
                b = [r["best"] for r in runs]
                diff = [x - y for x, y in zip(q, b)]
                res[name]["wilcoxon_p_q_vs_this_best"] = (round(float(wilcoxon(q, b).pvalue), 4)
                                                          if any(diff) else 1.0)
        out["results"][str(budget)] = res
    out["wall_s"] = round(time.perf_counter() - t, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
