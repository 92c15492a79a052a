"""GPU proxy throughput: seconds per 12-epoch paper proxy evaluation (CIFAR-100 shape,
synthetic data: 45,000 train and 5,000 validation images, batch 256, N=2, F=32) on one GPU,
for 3 blocks of different sizes (about 5, 12 and 23 layers), each configuration on the same
blocks:

* ``fp32_tf32_off``: the baseline, full fp32 (TF32 disabled for matmuls and convolutions);
* ``bf16_channels_last``: the speed-ups (data and augmentation resident on the GPU, bf16
  autocast, channels_last, cudnn.benchmark);
* ``concurrent_3_per_gpu``: 3 worker processes on the GPU (the pool executor), with the
  workers' start-up (spawn, imports, data onto the GPU, first evaluation's compilation)
  measured apart from the evaluations.

Every configuration first runs a 1-epoch warm-up evaluation (kernels chosen, caches filled)
that is not timed. A JSON line is printed after each measurement, so a run stopped by its time
limit still leaves its figures; the summary JSON line comes last. The paper: about 12
GPU-minutes per sampled block; our target: at most 15 s per evaluation on one H100/H200.

usage: python bench/gpu_proxy.py [--smoke]   (--smoke: tiny CPU run that checks the script)"""

import json
import random
import sys
import time

import torch
from _common import evaluator_for

from blockqnn.space.nsc import random_block

SIZES = (5, 12, 23)  # target block lengths: small, medium, large


def config(smoke: bool, fast: bool, epochs: int) -> list[str]:
    gpu = torch.cuda.is_available() and not smoke
    return [
        "data=synthetic",
        "data.in_channels=3",
        "data.input_size=32",
        "data.num_classes=100",
        f"data.train_size={512 if smoke else 50000}",
        "data.test_size=64",
        "data.val_fraction=0.1",
        "+data.augment.crop_padding=4",
        "+data.augment.flip=true",
        f"trainer={'gpu' if gpu else 'cpu'}",
        "trainer.deterministic=false",
        f"trainer.precision={'bf16-mixed' if (fast and gpu) else '32-true'}",
        f"trainer.benchmark={str(gpu).lower()}",
        f"recipe.epochs={epochs}",
        "recipe.batch_size=256",
        "recipe.restart.max=0",
        "recipe.restart.threshold=0.0",
        f"network.width={8 if smoke else 32}",
        f"network.blocks_per_stage={1 if smoke else 2}",
        f"network.channels_last={str(fast and gpu).lower()}",
    ]


def blocks_of_sizes(smoke: bool) -> list:
    """One random block (epsilon-1 walks of the 23-layer space) per target size."""
    rng = random.Random(0)
    pool = [random_block(rng, 23) for _ in range(2000)]
    sizes = (2, 3, 4) if smoke else SIZES
    return [min(pool, key=lambda b: (abs(len(b) - n), b.key)) for n in sizes]


def tf32(enabled: bool) -> None:
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def emit(record: dict) -> dict:
    print(json.dumps(record), flush=True)
    return record


def main(smoke: bool) -> dict:
    blocks = blocks_of_sizes(smoke)
    epochs = 1 if smoke else 12
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    out = {
        "bench": "gpu_proxy",
        "device": device,
        "epochs": epochs,
        "block_layers": [len(b) for b in blocks],
        "blocks": [b.to_list() for b in blocks],
    }
    for name, fast in (("fp32_tf32_off", False), ("bf16_channels_last", True)):
        tf32(False)  # fp32 means fp32; bf16 autocast does not use TF32 either way
        evaluate = evaluator_for(*config(smoke, fast, epochs))
        t = time.perf_counter()
        warm = evaluator_for(*config(smoke, fast, 1))(blocks[0].to_list())  # warm-up, not timed
        emit(
            {
                "config": name,
                "warmup_s": round(time.perf_counter() - t, 2),
                "status": warm["status"],
            }
        )
        times = []
        for b in blocks:
            r = evaluate(b.to_list())
            times.append(round(r["wall_time"], 2) if r["status"] == "ok" else None)
            emit(
                {
                    "config": name,
                    "layers": len(b),
                    "seconds": times[-1],
                    "status": r["status"],
                    "accuracy": r.get("accuracy"),
                    "device": device,
                }
            )
        out[name] = {"seconds_per_evaluation": times}
    # Several candidates per GPU at once: the pool executor with 3 workers on the GPU. Its
    # start-up (spawn, imports, data onto the GPU, a first evaluation of the smallest block in
    # each worker) is timed apart from the evaluations that follow in the same workers.
    from _common import compose_search

    from blockqnn.evaluator import evaluator_spec
    from blockqnn.executors import PoolExecutor

    gpus = [0] if torch.cuda.is_available() and not smoke else []
    spec = evaluator_spec(compose_search(*config(smoke, True, epochs)))
    pool = PoolExecutor(
        spec, workers_per_gpu=3, cpu_workers=3, gpus=gpus, threads_per_cpu_worker=1, max_retries=0
    )
    try:

        def run_all(nscs):
            for i, nsc in enumerate(nscs):
                pool.submit(i, nsc)
            done = {}
            while pool.in_flight:
                done.update(pool.wait())
            return [done[i] for i in range(len(nscs))]

        t = time.perf_counter()
        run_all([blocks[0].to_list()] * 3)
        startup = time.perf_counter() - t
        emit({"config": "concurrent_3_per_gpu", "startup_s": round(startup, 2)})
        t = time.perf_counter()
        results = run_all([b.to_list() for b in blocks])
        wall = time.perf_counter() - t
    finally:
        pool.close()
    out["concurrent_3_per_gpu"] = emit(
        {
            "config": "concurrent_3_per_gpu",
            "startup_s": round(startup, 2),
            "wall_s": round(wall, 2),
            "per_evaluation_s": [
                round(r["wall_time"], 2) if r.get("wall_time") else None for r in results
            ],
            "blocks_per_hour": round(3600 * len(blocks) / wall, 1),
            "statuses": [r["status"] for r in results],
        }
    )
    return out


if __name__ == "__main__":
    print(json.dumps(main("--smoke" in sys.argv)))
