"""Why the Q-learning agent fails at small budgets, and what fixes it: searches through the
BlockQNN-Bench surrogate (``evaluator=surrogate``), run by the search loop itself, for each
setting and seed. Per setting: the mean reward of the first and of the last epsilon stage, their
difference (the paper's figure rises as epsilon falls), the best reward found and the mean of
the 10 best distinct blocks, each as mean +- 95% CI over seeds, and how many distinct blocks the
last stage sampled. Prints one JSON line last.

usage: python bench/agent_ablation.py [seeds] [--schedule short|...] [--layers 6] [--batch 8]"""

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import compose_search, mean_ci  # noqa: E402

SETTINGS = {
    "random": ["agent=random"],
    "paper (lr 0.01, q_init 0.5)": [],
    "lr 0.1": ["agent.params.learning_rate=0.1"],
    "q_init 1.0 (optimistic)": ["agent.params.q_init=1.0"],
    "lr 0.1, q_init 1.0": ["agent.params.learning_rate=0.1", "agent.params.q_init=1.0"],
    "no reward shaping": ["agent.params.reward_shaping=false"],
    "replay 16": ["agent.params.replay_size=16"],
    "explore type_first": ["agent.params.explore=type_first"],
    "lr 0.1, q_init 1.0, type_first": ["agent.params.learning_rate=0.1", "agent.params.q_init=1.0",
                                       "agent.params.explore=type_first"],
}


def run(overrides: list[str], seed: int, common: list[str]) -> dict:
    from rich.console import Console

    from blockqnn.search.loop import Search, validate

    cfg = compose_search(*common, *overrides, f"seed={seed}")
    with tempfile.TemporaryDirectory(prefix="bq-ablation-") as tmp:
        search = Search(cfg, Path(tmp), evaluator=validate(cfg), console=Console(file=io.StringIO()))
        search.run()
        from blockqnn.search.store import SearchStore
        from blockqnn.search.loop import fingerprint

        store = SearchStore(Path(tmp) / "search.db", fingerprint(cfg))
        rows = store.episodes()
        store.close()
    eps = sorted({r["epsilon"] for r in rows}, reverse=True)
    first = [r["reward"] for r in rows if r["epsilon"] == eps[0]]
    last = [r for r in rows if r["epsilon"] == eps[-1]]
    best: dict = {}
    for r in rows:
        best[r["key"]] = r["reward"]
    top = sorted(best.values(), reverse=True)[:10]
    return {"first": float(np.mean(first)), "last": float(np.mean([r["reward"] for r in last])),
            "best": max(best.values()), "top10": float(np.mean(top)), "last_distinct": len({r["key"] for r in last})}


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds", type=int, nargs="?", default=10)
    ap.add_argument("--schedule", default="short")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    common = ["evaluator=surrogate", "logger=none", f"agent.epsilon_schedule={args.schedule}",
              f"space.max_layers={args.layers}", f"agent.batch_size={args.batch}"]
    out = {"bench": "agent_ablation", "evaluator": "surrogate", "schedule": args.schedule, "layers": args.layers,
           "batch": args.batch, "seeds": args.seeds, "settings": {}}
    t = time.perf_counter()
    for name, overrides in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        runs = [run(overrides, s, common if name != "random" else [c for c in common if "schedule" not in c]
                    + [f"agent.epsilon_schedule={args.schedule}"]) for s in range(args.seeds)]
        res = {}
        for k in ("first", "last", "best", "top10", "last_distinct"):
            m, h = mean_ci([r[k] for r in runs])
            res[k] = [round(m, 4), round(h, 4)]
        m, h = mean_ci([r["last"] - r["first"] for r in runs])
        res["last_minus_first"] = [round(m, 4), round(h, 4)]
        out["settings"][name] = res
        print(name, json.dumps(res), file=sys.stderr)
    out["wall_s"] = round(time.perf_counter() - t, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
