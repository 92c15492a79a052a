"""Wall time of the same 32-episode digits search under the local, pool(2) and ray(2)
executors (synchronous iterations, same seed, so the same blocks), repeated interleaved
(local, pool, ray, local, pool, ray, ...) so a slow spell of the machine hits all alike:
median wall, episodes per hour and trained (not reused) blocks per hour, with the spread.
Target: pool at least 1.5x faster than local on the 2-core machine. Prints one JSON line last.

usage: python bench/executors.py [--repeats 3] [local pool ray]"""

import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "logger=none",
    "agent.batch_size=8",
    "agent.epsilon_schedule=[[1.0,2],[0.5,2]]",
    "space.max_layers=6",
]
EXECUTORS = {
    "local": ["executor=local"],
    "pool": ["executor=pool", "executor.cpu_workers=2"],
    "ray": ["executor=ray", "executor.local_cpus=2"],
}


def run(name: str, extra: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bq-exec-{name}-")) / "run"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), *COMMON, *extra, f"hydra.run.dir={folder}"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    con = sqlite3.connect(folder / "search.db")
    rows = con.execute("SELECT nsc, reused FROM episodes ORDER BY id").fetchall()
    return {
        "wall_s": round(wall, 1),
        "episodes": len(rows),
        "trained": sum(1 for r in rows if not r[1]),
        "episodes_per_hour": round(3600 * len(rows) / wall),
        "blocks": [r[0] for r in rows],
    }


def main(which: list[str], repeats: int = 3) -> dict:
    import statistics

    runs: dict[str, list[dict]] = {name: [] for name in which}
    for _ in range(repeats):
        for name in which:
            runs[name].append(run(name, EXECUTORS[name]))
    out: dict = {"bench": "executors", "episodes": 32, "repeats": repeats}
    for name, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        med = statistics.median(walls)
        out[name] = {
            "wall_s": walls,
            "wall_s_median": med,
            "episodes": rs[0]["episodes"],
            "trained": rs[0]["trained"],
            "episodes_per_hour": round(3600 * rs[0]["episodes"] / med),
            "trained_per_hour": round(3600 * rs[0]["trained"] / med),
        }
    if "local" in runs:
        ref = runs["local"]
        for name, rs in runs.items():
            if name != "local":
                out[f"{name}_speedup"] = round(
                    out["local"]["wall_s_median"] / out[name]["wall_s_median"], 2
                )
                out[f"{name}_same_blocks"] = all(r["blocks"] == ref[0]["blocks"] for r in rs)
        out["local_same_blocks_every_repeat"] = all(r["blocks"] == ref[0]["blocks"] for r in ref)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", nargs="*", default=list(EXECUTORS))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(json.dumps(main(a.which, a.repeats)))
