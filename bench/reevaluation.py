"""Re-evaluation against the winner's curse, at the paper's scale on the BlockQNN-Bench surrogate.

For each seed, ``experiment=paper evaluator=surrogate`` (11,392 episodes, Q-learning with the
paper's constants) is run without re-evaluation and with each re-evaluation setting, twice:
at equal episodes (the whole schedule plus the re-evaluations) and at equal unique trainings
(the schedule cut so that its trainings plus the re-evaluations equal the plain search's
trainings; the cut is read off the plain run's own curve, which an end-only setting follows
exactly). Each search's returned block (best_block.json) is scored by the surrogate's
noise-free reward, against the best noise-free reward among the blocks it trained (the oracle):
regret = oracle - returned. The observed reward of the returned block is kept, labelled
optimistic.

    python bench/reevaluation.py [--seeds 0 1 2 3 4] [--jobs 2]

Resumable: finished searches are kept in bench/results/reevaluation/runs.jsonl and skipped.
Prints one JSON line last; raw records in bench/results/reevaluation/.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "results" / "reevaluation"
BASE = ["experiment=paper", "evaluator=surrogate", "logger=none"]
#: --scale small: the default search's budget (80 episodes, the short schedule) on the bench
#: proxy's 10-layer space with the paper's reward constants (the studies' 80-episode setting).
SMALL = [
    "evaluator=surrogate",
    "logger=none",
    "space.max_layers=10",
    "reward.mu=1.0",
    "reward.rho=8.0",
    "agent.epsilon_schedule=short",
]
SETTINGS = {
    "off": ["search.reevaluate.top=0"],
    "end_top10x4": [
        "search.reevaluate.top=10",
        "search.reevaluate.repeats=4",
        "search.reevaluate.max_rounds=5",
    ],
    "end_top5x2": [
        "search.reevaluate.top=5",
        "search.reevaluate.repeats=2",
        "search.reevaluate.max_rounds=5",
    ],
    "end_top3x2": [
        "search.reevaluate.top=3",
        "search.reevaluate.repeats=2",
        "search.reevaluate.max_rounds=3",
    ],
    "iter_top5x2": [
        "search.reevaluate.top=5",
        "search.reevaluate.repeats=2",
        "search.reevaluate.max_rounds=3",
        "search.reevaluate.every_iteration=true",
    ],
}


def rows(folder: Path, table: str) -> list[dict]:
    con = sqlite3.connect(folder / "search.db")
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY id")]
    con.close()
    return out


def score(folder: Path, evaluator) -> dict:
    """The returned block's noise-free reward, the oracle over the trained blocks, the counts."""
    eps = rows(folder, "episodes")
    re = rows(folder, "reevaluations")
    best = json.loads((folder / "best_block.json").read_text())
    trained = {}
    for e in eps:
        if not e["reused"] and not e["predicted"] and e["status"] == "ok":
            trained.setdefault(e["key"], e["nsc"])
    true = {k: evaluator.true_reward(json.loads(nsc))[0] for k, nsc in trained.items()}
    returned = evaluator.true_reward(best["nsc"])[0]
    oracle = max(true.values())
    return {
        "episodes": len(eps),
        "trainings": sum(1 for e in eps if not e["reused"] and not e["predicted"]) + len(re),
        "reevaluations": len(re),
        "returned_true": returned,
        "oracle_true": oracle,
        "regret": oracle - returned,
        "returned_observed_optimistic": best["reward_first"],
        "returned_mean": best["reward"],
        "returned_evaluations": best["evaluations"],
    }


def run(name: str, seed: int, extra: list[str], tag: str) -> dict:
    folder = OUT / "runs" / f"{tag}_seed{seed}"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    t = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            *BASE,
            f"seed={seed}",
            *SETTINGS[name],
            *extra,
            f"hydra.run.dir={folder}",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return {"folder": folder, "wall_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--scale", choices=["paper", "small"], default="paper")
    args = ap.parse_args()
    global OUT, BASE
    if args.scale == "small":
        OUT, BASE = OUT.with_name("reevaluation_small"), SMALL
    from _common import evaluator_for

    evaluator = evaluator_for(*BASE)
    evaluator.prepare()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "runs.jsonl"
    done = (
        {
            (r["setting"], r["seed"], r["budget"])
            for r in map(json.loads, log.read_text().splitlines())
        }
        if log.exists()
        else set()
    )

    def record(setting, seed, budget, info, extra=None):
        rec = {
            "setting": setting,
            "seed": seed,
            "budget": budget,
            "wall_s": round(info["wall_s"], 1),
            **(extra or {}),
            **score(info["folder"], evaluator),
        }
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
        return rec

    def one_seed(seed: int) -> None:
        if ("off", seed, "full") not in done:
            record("off", seed, "full", run("off", seed, [], "off"))
        off = OUT / "runs" / f"off_seed{seed}"
        eps = rows(off, "episodes")
        total = sum(1 for e in eps if not e["reused"] and not e["predicted"])
        for name in args.settings:
            if name == "off":
                continue
            if (name, seed, "equal_episodes") not in done:
                full = record(name, seed, "equal_episodes", run(name, seed, [], f"{name}_full"))
            else:
                full = next(
                    r
                    for r in map(json.loads, log.read_text().splitlines())
                    if (r["setting"], r["seed"], r["budget"]) == (name, seed, "equal_episodes")
                )
            if (name, seed, "equal_trainings") in done:
                continue
            extra = full["reevaluations"]
            trained, cut = 0, len(eps)
            for e in (
                eps
            ):  # the plain run's curve: episodes whose trainings plus the extra match its total
                trained += int(not e["reused"] and not e["predicted"])
                if trained + extra > total:
                    cut = e["id"]
                    break
            record(
                name,
                seed,
                "equal_trainings",
                run(name, seed, [f"search.max_episodes={cut}"], f"{name}_eq"),
                {"max_episodes": cut},
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one_seed, args.seeds))
    recs = [json.loads(line) for line in log.read_text().splitlines()]
    summary = {}
    for name in SETTINGS:
        for budget in ("full", "equal_episodes", "equal_trainings"):
            rs = [r for r in recs if r["setting"] == name and r["budget"] == budget]
            if rs:
                summary[f"{name}/{budget}"] = {
                    "n": len(rs),
                    "regret_mean": sum(r["regret"] for r in rs) / len(rs),
                    "regret_max": max(r["regret"] for r in rs),
                    "returned_true_mean": sum(r["returned_true"] for r in rs) / len(rs),
                    "within_0.01": sum(r["regret"] <= 0.01 for r in rs),
                    "trainings_mean": sum(r["trainings"] for r in rs) / len(rs),
                }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
