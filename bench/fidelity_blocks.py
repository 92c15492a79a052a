"""Pre-register the proxy-fidelity study's 40 blocks (issue 34, item 2), before any of them is
trained under the final recipe. Deterministic: rerunning writes the same file.

    python bench/fidelity_blocks.py   # -> bench/results/fidelity/blocks.json

The blocks, each with the group it was drawn from:
  * ``hand``: every hand-designed preset (``plain`` is the single 3x3 convolution) and the
    single 5x5 convolution (7 blocks);
  * ``table_top50``: 10 drawn (seed 0) from the 50 best of BlockQNN-Bench's blocks trained
    under 3 or more seeds (ranked by their seed mean);
  * ``table_q4``: 10 drawn from the table's top quartile (seed mean at or above its 75th
    percentile) outside those 50;
  * ``random``: uniform random blocks of the space (up to 10 layers), to 40 in all.
``second_seed``: every third block (its index divisible by 3) is also trained under a second
seed, which measures the final recipe's own seed-to-seed tau (the ceiling of any proxy).
Prints one JSON line last."""

from __future__ import annotations

import csv
import gzip
import json
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from blockqnn.space.nsc import Block, random_block
from blockqnn.space.presets import PRESETS, preset

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "bench" / "data" / "blockqnn_bench.csv.gz"
OUT = ROOT / "bench" / "results" / "fidelity" / "blocks.json"
N = 40


def table_means() -> dict[str, tuple[float, int, str]]:
    """key -> (seed-mean accuracy, seeds, nsc) of the table's measured blocks."""
    accs: dict[str, list[float]] = defaultdict(list)
    nscs: dict[str, str] = {}
    with gzip.open(TABLE, "rt") as f:
        for row in csv.DictReader(f):
            if row["status"] == "ok":
                accs[row["key"]].append(float(row["accuracy"]))
                nscs[row["key"]] = row["nsc"]
    return {k: (statistics.mean(v), len(v), nscs[k]) for k, v in accs.items()}


def choose() -> list[dict]:
    rng = random.Random(0)
    chosen: list[dict] = []
    seen: set[str] = set()

    def add(block: Block, group: str, **extra) -> None:
        if block.key not in seen:
            seen.add(block.key)
            chosen.append({"nsc": block.to_list(), "key": block.key, "group": group, **extra})

    for name in sorted(PRESETS):
        add(preset(name), "hand", name=name)
    add(Block.parse([[1, 1, 5, 0, 0], [2, 7, 0, 0, 0]]), "hand", name="conv5")
    means = table_means()
    multi = sorted((k for k, (_, n, _) in means.items() if n >= 3), key=lambda k: -means[k][0])[:50]
    for key in rng.sample(multi, 10):
        add(Block.parse(json.loads(means[key][2])), "table_top50", table_acc=means[key][0])
    q75 = sorted(m for m, _, _ in means.values())[int(0.75 * len(means))]
    quartile = sorted(k for k, (m, _, _) in means.items() if m >= q75 and k not in set(multi))
    for key in rng.sample(quartile, 10):
        add(Block.parse(json.loads(means[key][2])), "table_q4", table_acc=means[key][0])
    while len(chosen) < N:
        add(random_block(rng, 10), "random")
    for i, b in enumerate(chosen):
        b["index"] = i
        b["second_seed"] = i % 3 == 0
    return chosen


def main() -> dict:
    blocks = choose()
    if OUT.exists() and json.loads(OUT.read_text())["blocks"] != blocks:
        sys.exit(f"{OUT} holds another pre-registration; it is never overwritten")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"registered": "2026-12-06", "blocks": blocks}, indent=1) + "\n")
    groups = defaultdict(int)
    for b in blocks:
        groups[b["group"]] += 1
    return {
        "bench": "fidelity_blocks",
        "blocks": len(blocks),
        "groups": dict(groups),
        "second_seed": sum(b["second_seed"] for b in blocks),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
