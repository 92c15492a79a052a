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

from blockqnn.evaluator import evaluate
from blockqnn.space.nsc import random_block


def config(smoke: bool, fast: bool, epochs: int) -> dict:
    data = {"name": "synthetic", "in_channels": 3, "input_size": 32, "num_classes": 100,
            "train_size": 512 if smoke else 50000, "test_size": 64, "val_fraction": 0.1,
            "augment": {"crop_padding": 4, "flip": True}}
    gpu = torch.cuda.is_available() and not smoke
    trainer = {"accelerator": "gpu" if gpu else "cpu", "devices": 1, "deterministic": False,
               "precision": "bf16-mixed" if (fast and gpu) else "32-true"}
    return {"seed": 0, "data": data, "trainer": trainer,
            "recipe": {"epochs": epochs, "batch_size": 256, "restart": {"max": 0, "factor": 0.4, "threshold": 0.0}},
            "network": {"kind": "cifar", "width": 8 if smoke else 32, "blocks_per_stage": 1 if smoke else 2,
                        "stages": 3, "channels_last": fast and gpu}}


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
            r = evaluate(b.to_list(), config(smoke, fast, epochs))
            times.append(round(r["wall_time"], 2) if r["status"] == "ok" else r["error"][:200])
        out[name] = {"seconds_per_evaluation": times}
    # Several candidates per GPU at once: local worker pool with workers_per_gpu=3.
    if time.perf_counter() < budget:
        from blockqnn.executors import PoolExecutor

        pool = PoolExecutor(workers_per_gpu=3, cpu_workers=2, gpus=[0] if torch.cuda.is_available() and not smoke
                            else [])
        t = time.perf_counter()
        cfg = config(smoke, True, epochs)
        for i, b in enumerate(blocks):
            pool.submit(i, b.to_list(), cfg)
        results = {}
        while pool.in_flight:
            results.update(pool.wait())
        pool.close()
        wall = time.perf_counter() - t
        out["concurrent_3_per_gpu"] = {"wall_s": round(wall, 2), "seconds_per_evaluation": round(wall / len(blocks), 2),
                                       "statuses": [results[i]["status"] for i in sorted(results)]}
    return out


if __name__ == "__main__":
    print(json.dumps(main("--smoke" in sys.argv)))
