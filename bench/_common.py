"""Helpers shared by the bench scripts: run search.py in a fresh folder, read its episodes."""

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from blockqnn.compare import mean_ci  # noqa: E402,F401  (re-exported for the bench scripts)


def run_search(overrides: list[str], prefix: str = "bq-bench-") -> tuple[Path, float]:
    folder = Path(tempfile.mkdtemp(prefix=prefix)) / "run"
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), *overrides, f"hydra.run.dir={folder}"],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"search.py {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    return folder, wall


def save_raw(name: str, result: dict) -> dict:
    """Keep a bench script's result (its last JSON line) as ``bench/results/<name>.json`` (the
    file BENCHMARKS.md names beside the figures); returns the result."""
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), **result}, indent=1) + "\n"
    )
    return result


def episodes(folder: Path) -> list[dict]:
    con = sqlite3.connect(folder / "search.db")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM episodes ORDER BY id")]
    con.close()
    return rows


def parse_args(doc: str, positionals: dict[str, int], data: list[str]) -> argparse.Namespace:
    """Optional whole-number positionals (name -> default) and ``--data`` among ``data``
    (the first is the default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in positionals.items():
        parser.add_argument(name, type=int, nargs="?", default=default)
    parser.add_argument("--data", choices=data, default=data[0])
    return parser.parse_args()


def compose_search(*overrides: str):
    """conf/search.yaml composed with ``overrides`` (the config search.py would run)."""
    from hydra import compose, initialize_config_dir

    import blockqnn  # noqa: F401  registers the config schemas

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("search", overrides=list(overrides))


def evaluator_for(*overrides: str):
    """The evaluator a search with ``overrides`` builds (in this process)."""
    from blockqnn.evaluator import evaluator_spec, make_evaluator

    return make_evaluator(evaluator_spec(compose_search(*overrides)))


def evaluate_all(
    blocks: list, overrides: list[str], workers: int = 2, gpus: list | None = None, per_gpu: int = 1
) -> list[dict]:
    """Evaluate ``blocks`` (NSC lists) in local worker processes; results in block order."""
    from blockqnn.evaluator import evaluator_spec
    from blockqnn.executors import PoolExecutor

    pool = PoolExecutor(
        evaluator_spec(compose_search(*overrides)),
        workers_per_gpu=per_gpu,
        cpu_workers=workers,
        gpus=gpus or [],
        threads_per_cpu_worker=1,
        max_retries=1,
    )
    try:
        for i, b in enumerate(blocks):
            pool.submit(i, b)
        results: dict = {}
        while pool.in_flight:
            results.update(pool.wait())
    finally:
        pool.close()
    return [results[i] for i in range(len(blocks))]


def commit(path: Path, message: str) -> None:
    """Commit one record on its own (``git commit -- path`` leaves anything else staged alone);
    a busy index (another commit at that moment) is retried."""
    for _ in range(5):
        add = subprocess.run(["git", "add", str(path)], cwd=ROOT, capture_output=True)
        done = subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=ROOT, capture_output=True
        )
        if add.returncode == 0 and done.returncode == 0:
            return
        time.sleep(5)
    print(f"could not commit {path}; it stays on disk", flush=True)


def load_json(path: Path, default=None):
    """A study's JSON record file, or ``default`` where there is none yet."""
    return json.loads(path.read_text()) if path.exists() else default


def save_json(path: Path, data) -> None:
    """Write a study's JSON record file atomically (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
