"""Wall time and peak memory of the default `python search.py` (targets: 5 min, 3 GB on the
2-core CPU machine). Runs it in a fresh run folder; prints one JSON line last."""

import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import save_raw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(extra: list[str]) -> dict:
    run = Path(tempfile.mkdtemp(prefix="bq-default-")) / "run"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), f"hydra.run.dir={run}", *extra],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    con = sqlite3.connect(run / "search.db")
    n, reused, best = con.execute(
        "SELECT COUNT(*), SUM(reused), MAX(reward) FROM episodes"
    ).fetchone()
    outputs = all(
        (run / f).exists()
        for f in ("best_block.json", "best_block.png", "topk.json", "rewards.png")
    )
    return {
        "bench": "search_default",
        "returncode": proc.returncode,
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "episodes": n,
        "reused": reused,
        "best_reward": best,
        "outputs": outputs,
        "overrides": extra,
        "run_dir": str(run),
    }


if __name__ == "__main__":
    print(json.dumps(save_raw("search_default", main(sys.argv[1:]))))
