"""Wall time of the same 32-episode digits search under the local, pool(2) and ray(2)
executors (synchronous iterations, same seed, so the same blocks), and episodes per hour.
Target: pool at least 1.5x faster than local on the 2-core machine. Prints one JSON line last."""

import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["logger=none", "agent.batch_size=8", "agent.epsilon_schedule=[[1.0,2],[0.5,2]]", "space.max_layers=6"]
EXECUTORS = {"local": ["executor=local"], "pool": ["executor=pool", "executor.cpu_workers=2"],
             "ray": ["executor=ray", "executor.local_cpus=2"]}


def run(name: str, extra: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bq-exec-{name}-")) / "run"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "search.py"), *COMMON, *extra, f"hydra.run.dir={folder}"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    con = sqlite3.connect(folder / "search.db")
    rows = con.execute("SELECT nsc, reused FROM episodes ORDER BY id").fetchall()
    return {"wall_s": round(wall, 1), "episodes": len(rows), "trained": sum(1 for r in rows if not r[1]),
            "episodes_per_hour": round(3600 * len(rows) / wall), "blocks": [r[0] for r in rows]}


def main(which: list[str]) -> dict:
    results = {name: run(name, EXECUTORS[name]) for name in which}
    out = {"bench": "executors", "episodes": 32}
    for name, r in results.items():
        out[name] = {k: v for k, v in r.items() if k != "blocks"}
    if "local" in results:
        for name in results:
            if name != "local":
                out[f"{name}_speedup"] = round(results["local"]["wall_s"] / results[name]["wall_s"], 2)
                out[f"{name}_same_blocks"] = results[name]["blocks"] == results["local"]["blocks"]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:] or list(EXECUTORS))))
