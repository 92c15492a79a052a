"""Builds the BlockQNN-Bench table from the collection's run folders (bench/collect.sh).

    python bench/bench_table.py [run folders ...]  # default: every bench/collect/*/search.db

One row per real training (reused and predicted episodes are not trainings): run, seed,
canonical NSC, canonical key, status, validation accuracy (last epoch and per epoch), FLOPs,
params, density, wall time. Written to bench/data/blockqnn_bench.csv.gz with the proxy's
config beside it (bench/data/blockqnn_bench.config.json). ``--noise-blocks F --noise-count N``
also writes the first N distinct trained blocks of the first run to F (the blocks the noise
runs train again under other seeds)."""

import argparse
import csv
import gzip
import json
import sqlite3
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from blockqnn.space.nsc import Block  # noqa: E402

COLUMNS = [
    "run",
    "episode",
    "seed",
    "key",
    "nsc",
    "status",
    "accuracy",
    "history",
    "flops",
    "params",
    "density",
    "epochs",
    "wall_time",
]


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    con = sqlite3.connect(f"file:{folder / 'search.db'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    fingerprint = json.loads(
        con.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()[0]
    )
    rows = [
        dict(r)
        for r in con.execute(
            "SELECT * FROM episodes WHERE status != 'running' AND reused = 0 "
            "AND predicted = 0 ORDER BY id"
        )
    ]
    con.close()
    return fingerprint, rows


def proxy_config(fp: dict) -> dict:
    """What defines the proxy (not the seed, the agent, the reward constants or the space's
    ``max_layers``: blocks of up to 10 and of up to 23 layers train under one proxy), in one form
    for run folders written before and after the config's optimizer moved to model/."""
    data = {k: v for k, v in fp["data"].items() if k not in ("_target_",)}
    data.setdefault("resize", None)
    recipe = dict(fp["recipe"])
    optim = recipe.pop("optim", None)
    if optim is not None:  # recipe.optim (earlier versions)
        optimizer = {"lr": optim["lr"], "betas": list(optim["betas"]), "eps": optim["eps"]}
        scheduler = {"step_size": optim["lr_step"], "gamma": optim["lr_gamma"]}
    else:
        o, sch = fp["model"]["optimizer"], fp["model"]["scheduler"] or {}
        optimizer = {"lr": o["lr"], "betas": list(o["betas"]), "eps": o["eps"]}
        scheduler = {"step_size": sch.get("step_size"), "gamma": sch.get("gamma")}
    network = {k: fp["network"][k] for k in ("kind", "width", "blocks_per_stage", "stages")}
    return {
        "data": data,
        "recipe": recipe,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "network": network,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/data/blockqnn_bench.csv.gz")
    ap.add_argument("--noise-blocks", type=Path)
    ap.add_argument("--noise-count", type=int, default=50)
    ap.add_argument(
        "--noise-run", help="whose first blocks --noise-blocks takes (default: the first run)"
    )
    ap.add_argument(
        "--top-blocks", type=Path, help="write the table's best blocks (by mean accuracy) here"
    )
    ap.add_argument("--top-count", type=int, default=50)
    args = ap.parse_args()
    runs = args.runs or sorted(p.parent for p in (ROOT / "bench/collect").glob("*/search.db"))
    if not runs:
        sys.exit("no run folders with a search.db (run bench/collect.sh first)")
    table, config, canon, spaces = [], None, {}, {}
    for folder in runs:
        fp, rows = read_run(folder)
        proxy = proxy_config(fp)
        spaces[folder.name] = fp["max_layers"]
        if config is None:
            config = proxy
        elif proxy != config:
            sys.exit(f"{folder} was collected on another proxy than {runs[0]}: {proxy} vs {config}")
        for r in rows:
            # The key is recomputed from the block: run folders written by earlier versions
            # stored keys of an earlier canonical form, which would split a block's trainings.
            if r["nsc"] not in canon:
                block = Block.parse(r["nsc"])
                canon[r["nsc"]] = (block.key, block.canonical.to_json())
            key, canonical = canon[r["nsc"]]
            table.append(
                {
                    "run": folder.name,
                    "episode": r["id"],
                    "seed": fp["seed"],
                    "key": key,
                    "nsc": canonical,
                    "status": r["status"],
                    "accuracy": r["accuracy"],
                    "history": r.get("history")
                    or (json.dumps([r["accuracy"]]) if r["accuracy"] is not None else "[]"),
                    "flops": r["flops"],
                    "params": r["params"],
                    "density": r["density"],
                    "epochs": r["epochs"],
                    "wall_time": round(r["wall_time"] or 0.0, 3),
                }
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(table)
    args.out.with_name(args.out.name.replace(".csv.gz", ".config.json")).write_text(
        json.dumps(
            {
                "proxy": config,
                "runs": [
                    str(r.relative_to(ROOT)) if r.is_absolute() and ROOT in r.parents else str(r)
                    for r in runs
                ],
                "max_layers": spaces,  # each run's space
            },
            indent=1,
        )
        + "\n"
    )
    if args.noise_blocks:
        source = args.noise_run or runs[0].name
        first = [t for t in table if t["run"] == source and t["status"] == "ok"]
        seen, picked = set(), []
        for t in first:
            if t["key"] not in seen:
                seen.add(t["key"])
                picked.append(json.loads(t["nsc"]))
        args.noise_blocks.write_text(json.dumps(picked[: args.noise_count]) + "\n")
    if args.top_blocks:  # the top is where a search is decided: its blocks under more seeds
        accs: dict[str, list[float]] = {}
        for t in table:
            if t["status"] == "ok" and t["accuracy"] is not None:
                accs.setdefault(t["key"], []).append(float(t["accuracy"]))
        best = sorted(accs, key=lambda k: -sum(accs[k]) / len(accs[k]))[: args.top_count]
        nsc = {t["key"]: t["nsc"] for t in table}
        args.top_blocks.write_text(json.dumps([json.loads(nsc[k]) for k in best]) + "\n")
    keys = {t["key"] for t in table}
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import save_raw

    result = {
        "rows": len(table),
        "distinct_blocks": len(keys),
        "runs": len(runs),
        "out": str(args.out),
    }
    # the shipped table's record only (a table written elsewhere leaves bench/results alone)
    shipped = args.out.resolve() == (ROOT / "bench/data/blockqnn_bench.csv.gz").resolve()
    print(json.dumps(save_raw("bench_table", result) if shipped else result))


if __name__ == "__main__":
    main()
