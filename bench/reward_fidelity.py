"""Reward fidelity: for random blocks, Kendall tau between the accuracy after a much longer
training and (a) the early-stop accuracy, (b) the shaped reward, over a grid of mu and rho.
Prints one JSON line last.

usage: python bench/reward_fidelity.py [blocks] [long_epochs] [--data digits|fashion_mnist]

digits: the quick recipe (3 epochs) against long_epochs (20). fashion_mnist: the CPU proxy of
bench/strategies.py (a stratified 5,000-image subset, 4,000 train / 1,000 validation, one
epoch at batch 32) against long_epochs on the same images; both score the same validation
images."""

import json
import math
import multiprocessing as mp
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from scipy.stats import kendalltau

from blockqnn.evaluator import evaluate
from blockqnn.space.nsc import random_block

sys.path.insert(0, str(Path(__file__).parent))
from _common import parse_args  # noqa: E402

DATA = {
    "digits": ({"name": "digits", "val_fraction": 0.2}, 3),
    "fashion_mnist": ({"name": "fashion_mnist", "subset": 5000, "val_fraction": 0.2}, 1),
}


def early_cfg(data: str) -> dict:
    source, epochs = DATA[data]
    return {"data": source, "recipe": {"epochs": epochs, "batch_size": 32}, "network": {"width": 16}}


def long_cfg(data: str, epochs: int) -> dict:
    return {"data": DATA[data][0],
            "recipe": {"epochs": epochs, "batch_size": 32, "optim": {"lr": 1e-3, "lr_step": max(1, epochs // 3),
                                                                   "lr_gamma": 0.3}},
            "network": {"width": 16}}


def _init():
    import torch

    torch.set_num_threads(1)


def main(n: int = 40, long_epochs: int = 20, data: str = "digits") -> dict:
    rng = random.Random(0)
    blocks = []
    while len(blocks) < n:
        b = random_block(rng, 6)
        if b.key not in {x.key for x in blocks}:
            blocks.append(b)
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), initializer=_init) as pool:
        early = list(pool.map(evaluate, [b.to_list() for b in blocks], [early_cfg(data)] * n))
        late = list(pool.map(evaluate, [b.to_list() for b in blocks], [long_cfg(data, long_epochs)] * n))
    ok = [i for i in range(n) if early[i]["status"] == "ok" and late[i]["status"] == "ok"]
    final = [late[i]["accuracy"] for i in ok]
    out = {"bench": "reward_fidelity", "data": DATA[data][0], "blocks": len(ok), "early_epochs": DATA[data][1],
           "long_epochs": long_epochs,
           "tau_early_accuracy": round(kendalltau(final, [early[i]["accuracy"] for i in ok]).statistic, 4)}
    # FLOPs reference: recover it from the shipped reward (mu=1, rho=8, scale=0.01).
    grid = {}
    for mu in (0.0, 0.5, 1.0, 2.0, 4.0):
        for rho in (0.0, 1.0, 2.0, 4.0, 8.0):
            shaped = []
            for i in ok:
                e = early[i]
                penalty_now = (e["accuracy"] - e["reward"]) / 0.01  # mu=1*log(F/Fref) + 8*log(density)
                log_flops = penalty_now - 8.0 * math.log(e["density"])
                shaped.append(e["accuracy"] - 0.01 * (mu * log_flops + rho * math.log(e["density"])))
            grid[f"mu={mu},rho={rho}"] = round(kendalltau(final, shaped).statistic, 4)
    out["tau_shaped"] = grid
    best = max(grid, key=grid.get)
    out["best"] = {"setting": best, "tau": grid[best]}
    out["tau_shipped_mu1_rho8"] = grid["mu=1.0,rho=8.0"]
    return out


if __name__ == "__main__":
    a = parse_args(__doc__, {"blocks": 40, "long_epochs": 20}, list(DATA))
    print(json.dumps(main(a.blocks, a.long_epochs, a.data)))
