"""Seed noise of re-evaluations on the bench proxy: weights only, or weights and data order.

A re-evaluation of a block used to change only the weight initialisation (the data order and
augmentation came from the run's seed), so its repeats were correlated with the first training
and the standard error a search reports was too small; now a repeat's seed also draws the data
order (``dm.order_seed``). This measures both on real trainings of the bench proxy
(``experiment=bench_table``): for each block, its first training and ``--repeats`` repeats
under each mode; per mode the pooled seed-to-seed standard deviation of the validation
accuracy over the repeats and the first training, and how far the repeats' mean lies from the
first training (a correlated repeat stays close to it).

    python bench/seed_noise.py [--blocks 12] [--repeats 3]

Prints one JSON line last; raw records in bench/results/seed_noise.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
from _common import evaluator_for, save_raw  # noqa: E402

from blockqnn.space.nsc import random_block  # noqa: E402
from blockqnn.space.presets import PRESETS  # noqa: E402


class init_only:  # noqa: N801  a context, named for what it does
    """Within it, the datamodule's training order stays the run's, whatever the evaluation's
    seed (the behaviour before this change): a class-level property shadows ``order_seed``."""

    def __init__(self, dm):
        self.cls = type(dm)

    def __enter__(self):
        self.cls.order_seed = property(lambda dm: dm.seed, lambda dm, value: None)

    def __exit__(self, *exc):
        del self.cls.order_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    blocks = [p["nsc"] for p in PRESETS.values()]
    while len(blocks) < args.blocks:
        blocks.append(random_block(rng, 10, min_layers=2).to_list())
    blocks = blocks[: args.blocks]
    ev = evaluator_for("experiment=bench_table", "logger=none")
    records = []
    start = time.time()
    for i, nsc in enumerate(blocks):
        first = ev(nsc)["accuracy"]
        row = {"nsc": nsc, "first": first}
        with init_only(ev.datamodule):
            row["init_only"] = [ev(nsc, repeat=r)["accuracy"] for r in range(1, args.repeats + 1)]
        row["init_and_order"] = [ev(nsc, repeat=r)["accuracy"] for r in range(1, args.repeats + 1)]
        records.append(row)
        print(f"[{i + 1}/{len(blocks)} {time.time() - start:.0f}s] {row}", file=sys.stderr)
    out = {"bench": "seed_noise", "blocks": len(blocks), "repeats": args.repeats}
    for mode in ("init_only", "init_and_order"):
        sds = [np.std([r["first"], *r[mode]], ddof=1) for r in records]
        gaps = [abs(np.mean(r[mode]) - r["first"]) for r in records]
        out[mode] = {
            "pooled_sd": float(np.sqrt(np.mean(np.square(sds)))),
            "mean_gap_repeats_to_first": float(np.mean(gaps)),
        }
    out["sd_ratio"] = out["init_and_order"]["pooled_sd"] / out["init_only"]["pooled_sd"]
    out["wall_s"] = round(time.time() - start, 1)
    save_raw("seed_noise", {**out, "records": records})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
