"""Framework overhead of a proxy evaluation: the evaluator (Lightning, reward callback,
restart check) against a bare PyTorch loop doing the same epochs, batches and validation
passes on the same block and digits data, for 3 blocks of 2, 5 and 10 layers. Measured
interleaved (each repeat runs every block under both), median of ``repeats`` with the spread
of the per-repeat ratios; the cold first evaluation of a fresh evaluator (imports, data,
first-call costs) is reported apart, and so are the parts of the per-candidate fixed cost
(FLOPs count from the NSC, Trainer set-up). Targets: ratio <= 1.05; a digits proxy evaluation
of the 5-layer block <= 3 s. Prints one JSON line last.

usage: python bench/overhead.py [repeats]"""

import json
import statistics
import time

import torch
from _common import evaluator_for

from blockqnn.space.network import build_network

BLOCKS = {
    2: [[1, 1, 3, 0, 0], [2, 2, 3, 1, 0]],
    5: [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 0, 2], [4, 6, 0, 1, 3], [5, 2, 3, 0, 0]],
    10: [
        [1, 1, 3, 0, 0],
        [2, 1, 5, 1, 0],
        [3, 1, 1, 0, 0],
        [4, 5, 0, 2, 3],
        [5, 3, 3, 4, 0],
        [6, 1, 3, 5, 0],
        [7, 6, 0, 4, 6],
        [8, 2, 3, 7, 0],
        [9, 1, 1, 8, 0],
        [10, 5, 0, 9, 1],
    ],
}
OVERRIDES = ["recipe.epochs=3", "recipe.batch_size=32"]


def bare(ev, block) -> float:
    t = time.perf_counter()
    run = ev.run
    torch.manual_seed(int(run.seed))
    dm = ev.datamodule
    spec = {
        k: v for k, v in ev.network_spec().items() if k != "channels_last"
    }  # the module's own option
    net = build_network(block, **spec)
    o, s = run.model.optimizer, run.model.scheduler
    opt = torch.optim.Adam(net.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps)
    sched = torch.optim.lr_scheduler.StepLR(opt, s.step_size, s.gamma)
    for _ in range(int(run.recipe.epochs)):
        net.train()
        for x, y in dm.train_dataloader():
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in dm.val_dataloader():
                correct += (net(x).argmax(1) == y).sum().item()
                total += len(y)
    return time.perf_counter() - t


def fixed_parts(ev, block) -> dict:
    """The per-candidate set-up the evaluator adds: FLOPs and params from the NSC, and a
    Lightning Trainer with the evaluation's callbacks."""
    from blockqnn.evaluator.training import build_trainer
    from blockqnn.space.cost import network_cost
    from blockqnn.space.nsc import Block

    t = time.perf_counter()
    network_cost(Block.parse(block), **ev.network_spec())
    flops_s = time.perf_counter() - t
    t = time.perf_counter()
    build_trainer(ev.run, int(ev.run.recipe.epochs), [], None)
    trainer_s = time.perf_counter() - t
    return {"flops_count_s": round(flops_s, 4), "trainer_setup_s": round(trainer_s, 4)}


def main(repeats: int = 5) -> dict:
    t = time.perf_counter()
    evaluator = evaluator_for(*OVERRIDES)
    cold = evaluator(BLOCKS[5])  # a fresh evaluator's first call: imports, data, first-call costs
    cold_s = time.perf_counter() - t
    for block in BLOCKS.values():
        evaluator(block), bare(evaluator, block)  # warm-up of each block's shapes
    ev: dict = {n: [] for n in BLOCKS}
    ba: dict = {n: [] for n in BLOCKS}
    for _ in range(repeats):
        for n, block in BLOCKS.items():
            r = evaluator(block)
            assert r["status"] == "ok", r
            ev[n].append(r["wall_time"])
            ba[n].append(bare(evaluator, block))
    out = {
        "bench": "overhead",
        "data": "digits",
        "epochs": 3,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cold_first_evaluation_s": round(cold_s, 2),
        "cold_first_wall_time_s": round(cold["wall_time"], 2),
    }
    for n, block in BLOCKS.items():
        ratios = sorted(e / b for e, b in zip(ev[n], ba[n]))
        e, b = statistics.median(ev[n]), statistics.median(ba[n])
        out[f"layers_{n}"] = {
            "evaluator_s": round(e, 3),
            "bare_s": round(b, 3),
            "ratio": round(e / b, 3),
            "ratio_min_max": [round(ratios[0], 3), round(ratios[-1], 3)],
            "fixed_s": round(e - b, 3),
            **fixed_parts(evaluator, block),
        }
    out["ratio_worst_block"] = max(out[f"layers_{n}"]["ratio"] for n in BLOCKS)
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
