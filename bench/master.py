"""The search master's throughput: the whole loop of ``python search.py`` (store, agent saves,
the W&B offline logger, progress, outputs) with an instant evaluator (``evaluator=surrogate``),
so everything measured is the master's own cost.

For each length (11,392 episodes: ``experiment=paper``; 50,000: the paper's constants with
the paper's schedule stretched to 782 iterations of 64) it reports, from the store's own
timestamps: episodes per second overall and per 1,000-episode window (and the ratio of the
last window to the first), the master's cost per episode in the first and the last window
(time per episode minus the evaluator's own ``wall_time``), the peak resident memory of the
search process, the database size, the time to the first episode (start-up) and to the
outputs after the last, and the time of ``python -m blockqnn.report`` on the result. For
11,392 it also kills a second search with SIGKILL near episode 6,000 and near 11,000
(``--kill-at``), times each resume to its first new episode, and checks the resumed search
against the undisturbed one (every episode once, the same blocks).

usage: python bench/master.py [--episodes 11392 50000] [--logger wandb] [--kill-at 6000 11000]
Prints a JSON line per measured search and a summary JSON line last."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The paper's schedule stretched to 782 iterations of 64 (50,048 planned; capped at 50,000).
LONG = (
    "[[1.0,417],[0.9,31],[0.8,31],[0.7,31],[0.6,44],[0.5,44],[0.4,44],[0.3,44],[0.2,44],[0.1,52]]"
)


def overrides(episodes: int, logger: str) -> list[str]:
    out = ["experiment=paper", "evaluator=surrogate", f"logger={logger}"]
    if episodes != 11392:
        out += [f"agent.epsilon_schedule={LONG}", f"search.max_episodes={episodes}"]
    return out


def _command(folder: Path, episodes: int, logger: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "search.py"),
        *overrides(episodes, logger),
        f"hydra.run.dir={folder}",
    ]


def _env() -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "100"}


def _rows(folder: Path) -> list[tuple]:
    con = sqlite3.connect(f"file:{folder / 'search.db'}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT id, key, status, started_at, finished_at, wall_time, nsc FROM episodes ORDER BY id"
    ).fetchall()
    con.close()
    return rows


def _count(folder: Path) -> int:
    if not (folder / "search.db").exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{folder / 'search.db'}?mode=ro", uri=True)
        n = con.execute("SELECT COUNT(*) FROM episodes WHERE status != 'running'").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def measure(episodes: int, logger: str) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bq-master-")) / "run"
    t0 = time.time()
    proc = subprocess.Popen(
        _command(folder, episodes, logger),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _, err = proc.communicate()
    end = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"search failed:\n{err[-3000:]}")
    import resource

    peak_mb = (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    )  # the largest child so far
    rows = _rows(folder)
    assert len(rows) == episodes and all(r[2] != "running" for r in rows), "episodes missing"
    finished = [r[4] for r in rows]
    first_start = rows[0][3]
    windows = []
    master_ms = []
    for w in range(0, episodes, 1000):
        stop = min(episodes, w + 1000)
        begin = finished[w - 1] if w else first_start
        span = finished[stop - 1] - begin
        windows.append(round((stop - w) / span, 1))
        evaluator = sum(r[5] or 0.0 for r in rows[w:stop])
        master_ms.append(round(1000 * (span - evaluator) / (stop - w), 3))
    out = {
        "bench": "master",
        "episodes": episodes,
        "logger": logger,
        "wall_s": round(end - t0, 1),
        "startup_s": round(first_start - t0, 2),
        "loop_s": round(finished[-1] - first_start, 1),
        "outputs_s": round(end - finished[-1], 2),
        "episodes_per_s": round(episodes / (finished[-1] - first_start), 1),
        "window_episodes_per_s": windows,
        "last_over_first_window": round(windows[-1] / windows[0], 3) if len(windows) > 1 else 1.0,
        "master_ms_per_episode_first_last": [master_ms[0], master_ms[-1]],
        "peak_rss_mb": round(peak_mb, 1),
        "db_mb": round((folder / "search.db").stat().st_size / 2**20, 1),
        "folder": str(folder),
    }
    t = time.perf_counter()
    rep = subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(folder)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    if rep.returncode != 0:
        raise RuntimeError(f"report failed:\n{rep.stderr[-3000:]}")
    out["report_s"] = round(
        time.perf_counter() - t, 1
    )  # python -m blockqnn.report, start-up included
    return out


def resume(episodes: int, logger: str, reference: Path, kill_at: int) -> dict:
    """SIGKILL a fresh search once ``kill_at`` episodes are done, rerun it, time the rerun's
    first new episode, and compare the finished search with ``reference``."""
    folder = Path(tempfile.mkdtemp(prefix="bq-master-resume-")) / "run"
    proc = subprocess.Popen(
        _command(folder, episodes, logger),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    while _count(folder) < kill_at:
        if proc.poll() is not None:
            raise RuntimeError("the search ended before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _count(folder)
    t0 = time.time()
    again = subprocess.Popen(
        _command(folder, episodes, logger),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _, err = again.communicate()
    if again.returncode != 0:
        raise RuntimeError(f"the resumed search failed:\n{err[-3000:]}")
    rows = _rows(folder)
    first_new = min(r[4] for r in rows if r[4] is not None and r[4] > t0)
    ref = _rows(reference)
    return {
        "killed_after": done,
        "resume_to_first_new_episode_s": round(first_new - t0, 2),
        "every_episode_once": len(rows) == episodes
        and [r[0] for r in rows] == list(range(episodes))
        and all(r[2] != "running" for r in rows),
        "same_blocks_as_undisturbed": [r[1] for r in rows] == [r[1] for r in ref],
    }


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, nargs="*", default=[11392, 50000])
    ap.add_argument("--logger", default="wandb", choices=["wandb", "csv", "none"])
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument(
        "--kill-at",
        type=int,
        nargs="*",
        default=[6000, 11000],
        help="episodes at which a second 11,392-episode search is SIGKILLed and resumed",
    )
    args = ap.parse_args()
    summary: dict = {"bench": "master", "logger": args.logger, "runs": []}
    for n in args.episodes:
        res = measure(n, args.logger)
        if n == 11392 and not args.no_resume:
            res["resume"] = [
                resume(n, args.logger, Path(res["folder"]), kill_at=k) for k in args.kill_at
            ]
        print(json.dumps(res), flush=True)
        summary["runs"].append(
            {
                k: res[k]
                for k in (
                    "episodes",
                    "wall_s",
                    "episodes_per_s",
                    "last_over_first_window",
                    "master_ms_per_episode_first_last",
                    "peak_rss_mb",
                    "db_mb",
                    "report_s",
                )
            }
            | ({"resume": res["resume"]} if "resume" in res else {})
        )
    return summary


if __name__ == "__main__":
    print(json.dumps(main()))
