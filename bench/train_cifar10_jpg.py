"""Brief full training of a preset on the CIFAR-10 JPEGs (../shared/data/cifar10_jpg.tar.gz):
test accuracy and training images per second. Unpacks into a temporary folder, runs
`python train.py data=image_folder ...`, prints one JSON line last.

usage: python bench/train_cifar10_jpg.py [epochs] [extra train.py overrides...]"""

import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import save_raw  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpg.tar.gz"


def main(epochs: int, extra: list[str]) -> dict:
    if not ARCHIVE.exists():
        return {"bench": "train_cifar10_jpg", "skipped": f"{ARCHIVE} not found"}
    tmp = Path(tempfile.mkdtemp(prefix="bq-cifar10jpg-"))
    t = time.perf_counter()
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp / "data", filter="data")
    unpack = time.perf_counter() - t
    run = tmp / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "block=resnet_basic",
        "data=image_folder",
        f"data.root={tmp / 'data'}",
        "data.augment.crop_padding=4",
        "data.augment.flip=true",
        f"train.epochs={epochs}",
        "train.batch_size=128",
        "logger=csv",
        "train.export=false",
        f"hydra.run.dir={run}",
        *extra,
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"bench": "train_cifar10_jpg", "returncode": proc.returncode}
    m = json.loads((run / "metrics.json").read_text())
    return {
        "bench": "train_cifar10_jpg",
        "block": "resnet_basic",
        "epochs": m["epochs"],
        "test_acc": round(m["test_acc"], 4),
        "images_per_second": round(m["images_per_second"], 1),
        "params": m["params"],
        "flops": m["flops"],
        "wall_s": round(wall, 1),
        "unpack_s": round(unpack, 1),
        "overrides": extra,
    }


if __name__ == "__main__":
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    print(json.dumps(save_raw("train_cifar10_jpg", main(epochs, sys.argv[2:]))))
