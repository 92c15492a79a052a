"""How long building a network from a block takes (issue: well under a second).

Builds the CIFAR network (N=2, F=32, 3 stages) from random 23-layer blocks and reports the
median and worst build time; prints one JSON line last."""

import json
import random
import statistics
import sys
import time
from pathlib import Path

from blockqnn.space.network import build_network
from blockqnn.space.nsc import random_block

sys.path.insert(0, str(Path(__file__).parent))
from _common import save_raw  # noqa: E402


def main(n: int = 20) -> dict:
    rng = random.Random(0)
    times = []
    build_network(random_block(rng, 23, 23), width=32, blocks_per_stage=2)  # warm-up (imports)
    for _ in range(n):
        block = random_block(rng, 23, 23)
        t = time.perf_counter()
        build_network(block, width=32, blocks_per_stage=2)
        times.append(time.perf_counter() - t)
    return {
        "bench": "build_network",
        "layers": 23,
        "blocks": n,
        "median_s": round(statistics.median(times), 4),
        "max_s": round(max(times), 4),
    }


if __name__ == "__main__":
    print(json.dumps(save_raw("build_network", main())))
