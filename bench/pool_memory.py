"""Resident memory of a pool worker over many evaluations: one single-threaded CPU worker
evaluates ``n`` random blocks (up to 6 layers, digits, one epoch, F = 8) one after another;
its RSS is read after 10 evaluations and every 50 after. Target: RSS after 500 evaluations
within 1.2x of after 10 (no global cache holding past candidates). Prints one JSON line last.

usage: python bench/pool_memory.py [n]"""

import json
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import compose_search  # noqa: E402


def main(n: int = 500) -> dict:
    from blockqnn.agent.baselines import RandomAgent
    from blockqnn.evaluator import evaluator_spec
    from blockqnn.executors import PoolExecutor

    spec = evaluator_spec(compose_search("recipe.epochs=1", "network.width=8", "logger=none"))
    pool = PoolExecutor(
        spec, workers_per_gpu=1, cpu_workers=1, gpus=[], threads_per_cpu_worker=1, max_retries=0
    )
    agent = RandomAgent(max_layers=6, seed=0)
    rss: dict[int, float] = {}
    statuses: dict[str, int] = {}
    t = time.perf_counter()
    try:
        for i in range(1, n + 1):
            pool.submit(i, agent.ask().to_list())
            for _, r in pool.wait():
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            if i == 10 or i % 50 == 0:
                pid = next(iter(pool.pools[0]._processes))
                rss[i] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
                print(f"{i}: {rss[i]} MB", file=sys.stderr)
    finally:
        pool.close()
    return {
        "bench": "pool_memory",
        "evaluations": n,
        "rss_mb": rss,
        "statuses": statuses,
        "last_over_10": round(rss[max(rss)] / rss[10], 3),
        "replaced_workers": pool.replaced,
        "wall_s": round(time.perf_counter() - t, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)))
