"""GPU proxy throughput: seconds per 12-epoch paper proxy evaluation (CIFAR-100 shape,
synthetic data: 45,000 train and 5,000 validation images, batch 256, N=2, F=32) for typical
sampled blocks on one GPU, without and with the speed-ups: data and augmentation resident on
the GPU, channels_last, bf16, and several candidates per GPU. The paper's figure is about 12
GPU-minutes per sampled block; the target is at most 15 s per evaluation on one H100.
Designed to finish in under 8 minutes on a GPU; prints one JSON line last.

usage: python bench/gpu_proxy.py [--smoke]   (--smoke: tiny CPU run that checks the script)"""

import json
import random
import sys
import time

import torch

from _common import evaluate_all, evaluator_for
from blockqnn.space.nsc import random_block


def config(smoke: bool, fast: bool, epochs: int) -> list[str]:
    gpu = torch.cuda.is_available() and not smoke
    return ["data=synthetic", "data.in_channels=3", "data.input_size=32", "data.num_classes=100",
            f"data.train_size={512 if smoke else 50000}", "data.test_size=64", "data.val_fraction=0.1",
            "+data.augment.crop_padding=4", "+data.augment.flip=true", f"trainer={'gpu' if gpu else 'cpu'}",
            "trainer.deterministic=false", f"trainer.precision={'bf16-mixed' if (fast and gpu) else '32-true'}",
            f"recipe.epochs={epochs}", "recipe.batch_size=256", "recipe.restart.max=0", "recipe.restart.threshold=0.0",
            f"network.width={8 if smoke else 32}", f"network.blocks_per_stage={1 if smoke else 2}",
            f"network.channels_last={str(fast and gpu).lower()}"]


def main(smoke: bool) -> dict:
    rng = random.Random(0)
    # Typical sampled blocks: random walks of the 23-layer space at epsilon 1, shortest first.
    blocks = sorted((random_block(rng, 23 if not smoke else 4) for _ in range(3)), key=len)
    epochs = 1 if smoke else 12
    out = {"bench": "gpu_proxy", "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
           "epochs": epochs, "block_layers": [len(b) for b in blocks]}
    budget = time.perf_counter() + (60 if smoke else 420)
    for name, fast in (("baseline_fp32", False), ("fast_bf16_channels_last", True)):
        times = []
        for b in blocks[:2]:
            if time.perf_counter() > budget:
                break
            r = evaluator_for(*config(smoke, fast, epochs))(b.to_list())
            times.append(round(r["wall_time"], 2) if r["status"] == "ok" else r["error"][:200])
        out[name] = {"seconds_per_evaluation": times}
    # Several candidates per GPU at once: local worker pool with workers_per_gpu=3.
    if time.perf_counter() < budget:
        t = time.perf_counter()
        gpus = [0] if torch.cuda.is_available() and not smoke else []
        results = dict(enumerate(evaluate_all([b.to_list() for b in blocks], config(smoke, True, epochs),
                                              workers=2, gpus=gpus, per_gpu=3)))
        wall = time.perf_counter() - t
        out["concurrent_3_per_gpu"] = {"wall_s": round(wall, 2), "seconds_per_evaluation": round(wall / len(blocks), 2),
                                       "statuses": [results[i]["status"] for i in sorted(results)]}
    return out


if __name__ == "__main__":
    print(json.dumps(main("--smoke" in sys.argv)))
