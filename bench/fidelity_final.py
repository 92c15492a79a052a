"""The proxy-fidelity study's final trainings (issue 34, item 2): each of the 40 pre-registered
blocks (bench/results/fidelity/blocks.json) trained under the final recipe, the figure every
candidate proxy is scored against (bench/proxy_fidelity.py).

    nohup python bench/fidelity_final.py > /tmp/fidelity_final.log 2>&1 &   # resumable

The final recipe (FINAL below): all 60,000 Fashion-MNIST training images split 50,000 /
10,000 (the split fixed across seeds, train.split_seed=0) at 14 x 14, each block's network at
100,000 parameters (network.params, per-stage widths within 3%), N = 2 blocks per stage,
3 stages, 3 epochs of Adam (lr 2e-3, cosine) at batch 128, random 1-pixel crops and horizontal
flips. The seed varies initialisation and data order only. Test images are never read
(train.test=false): everything chosen from this study is chosen on validation.

Why 14 x 14: the first two trainings at 28 x 28 (the pilot, bench/results/fidelity/pilot_28x28)
took 15 and over 30 minutes of both cores (at a fixed parameter count a network's FLOPs scale
with the pixels, and deep blocks of small convolutions run far below the machine's peak): the
study's 54 trainings would have needed about 25 CPU-hours, twice the issue's whole budget. At
the proxy's resolution each costs about a quarter; the final recipe still trains on 17 times
the proxy's images for 3 times its epochs, at N = 2.

Order: the blocks in a fixed shuffled order (so a partial study is a random part of it), each
block's second seed (every third block has one) right after its first. Each training is one
record, bench/results/fidelity/final/<index>_s<seed>.json, committed as it lands; a record on
disk is never trained again (a failed one is). Prints one JSON line last."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ROOT / "bench" / "results" / "fidelity" / "blocks.json"
OUT = ROOT / "bench" / "results" / "fidelity" / "final"

#: The final recipe (train.py overrides), shared with bench/end_to_end.py's final trainings.
FINAL = [
    "data=fashion_mnist",
    "data.val_fraction=0.1666667",
    "data.resize=14",
    "+data.augment.crop_padding=1",
    "+data.augment.flip=true",
    "model/network=final",
    "network.params=100000",
    "network.blocks_per_stage=2",
    "network.stages=3",
    "train.epochs=3",
    "train.batch_size=128",
    "model.optimizer.lr=2.0e-3",
    "train.split_seed=0",
    "train.test=false",
    "train.export=false",
    "logger=none",
    "trainer.deterministic=false",
]


def schedule(blocks: list[dict]) -> list[tuple[int, int]]:
    order = [b["index"] for b in blocks]
    random.Random(34).shuffle(order)
    second = {b["index"] for b in blocks if b["second_seed"]}
    runs: list[tuple[int, int]] = []
    for i in order:
        runs.append((i, 0))
        if i in second:
            runs.append((i, 1))
    return runs


def record_path(index: int, seed: int) -> Path:
    return OUT / f"{index:02d}_s{seed}.json"


def train(block: dict, seed: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bq-fidelity-")) / "run"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        f"block={json.dumps(block['nsc'], separators=(',', ':'))}",
        f"seed={seed}",
        *FINAL,
        f"hydra.run.dir={folder}",
    ]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    base = {"index": block["index"], "key": block["key"], "group": block["group"], "seed": seed}
    if proc.returncode != 0:
        return {**base, "status": "failed", "error": proc.stderr[-2000:], "wall_s": wall}
    metrics = json.loads((folder / "metrics.json").read_text())
    shutil.rmtree(folder.parent, ignore_errors=True)
    return {
        **base,
        "status": "ok",
        "val_acc": metrics["val_acc"],
        "params": metrics["params"],
        "flops": metrics["flops"],
        "widths": metrics["widths"],
        "epochs": metrics["epochs"],
        "train_wall_s": metrics["wall_time"],
        "wall_s": wall,
        "recipe": FINAL,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main() -> dict:
    blocks = json.loads(BLOCKS.read_text())["blocks"]
    by_index = {b["index"]: b for b in blocks}
    runs = schedule(blocks)
    OUT.mkdir(parents=True, exist_ok=True)
    for n, (index, seed) in enumerate(runs, 1):
        path = record_path(index, seed)
        if path.exists() and json.loads(path.read_text())["status"] == "ok":
            continue  # trained; a failed training (a crash, a kill) is trained again
        record = train(by_index[index], seed)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(
            f"[{n}/{len(runs)}] block {index} seed {seed}: {record['status']} "
            f"val {record.get('val_acc')} in {record['wall_s']:.0f} s",
            flush=True,
        )
        commit(path, f"fidelity study: block {index} seed {seed} under the final recipe")
    done = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    return {
        "bench": "fidelity_final",
        "trainings": len(done),
        "of": len(runs),
        "ok": sum(r["status"] == "ok" for r in done),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
