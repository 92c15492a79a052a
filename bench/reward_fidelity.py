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
import random
import sys
from pathlib import Path

from scipy.stats import kendalltau

from blockqnn.space.nsc import random_block

sys.path.insert(0, str(Path(__file__).parent))
from _common import evaluate_all, parse_args, save_raw  # noqa: E402

DATA = {
    "digits": (["data=digits", "data.val_fraction=0.2"], 3),
    "fashion_mnist": (["data=fashion_mnist", "data.subset=5000", "data.val_fraction=0.2"], 1),
}


def early_overrides(data: str) -> list[str]:
    source, epochs = DATA[data]
    # The grid below is recomputed from rewards shaped with mu = 1, rho = 8.
    return [
        *source,
        f"recipe.epochs={epochs}",
        "recipe.batch_size=32",
        "network.width=16",
        "reward.mu=1.0",
        "reward.rho=8.0",
    ]


def long_overrides(data: str, epochs: int) -> list[str]:
    return [
        *DATA[data][0],
        f"recipe.epochs={epochs}",
        "recipe.batch_size=32",
        "network.width=16",
        f"model.scheduler.step_size={max(1, epochs // 3)}",
        "model.scheduler.gamma=0.3",
    ]


def main(n: int = 40, long_epochs: int = 20, data: str = "digits") -> dict:
    rng = random.Random(0)
    blocks = []
    while len(blocks) < n:
        b = random_block(rng, 6)
        if b.key not in {x.key for x in blocks}:
            blocks.append(b)
    early = evaluate_all([b.to_list() for b in blocks], early_overrides(data))
    late = evaluate_all([b.to_list() for b in blocks], long_overrides(data, long_epochs))
    ok = [i for i in range(n) if early[i]["status"] == "ok" and late[i]["status"] == "ok"]
    final = [late[i]["accuracy"] for i in ok]
    out = {
        "bench": "reward_fidelity",
        "data": DATA[data][0],
        "blocks": len(ok),
        "early_epochs": DATA[data][1],
        "long_epochs": long_epochs,
        "tau_early_accuracy": round(
            kendalltau(final, [early[i]["accuracy"] for i in ok]).statistic, 4
        ),
    }
    # FLOPs reference: recover it from the shipped reward (mu=1, rho=8, scale=0.01).
    grid = {}
    for mu in (0.0, 0.5, 1.0, 2.0, 4.0):
        for rho in (0.0, 1.0, 2.0, 4.0, 8.0):
            shaped = []
            for i in ok:
                e = early[i]
                penalty_now = (
                    e["accuracy"] - e["reward"]
                ) / 0.01  # mu=1*log(F/Fref) + 8*log(density)
                log_flops = penalty_now - 8.0 * math.log(e["density"])
                shaped.append(
                    e["accuracy"] - 0.01 * (mu * log_flops + rho * math.log(e["density"]))
                )
            grid[f"mu={mu},rho={rho}"] = round(kendalltau(final, shaped).statistic, 4)
    out["tau_shaped"] = grid
    best = max(grid, key=grid.get)
    out["best"] = {"setting": best, "tau": grid[best]}
    out["tau_shipped_mu1_rho8"] = grid["mu=1.0,rho=8.0"]
    return out


if __name__ == "__main__":
    a = parse_args(__doc__, {"blocks": 40, "long_epochs": 20}, list(DATA))
    print(json.dumps(save_raw(f"reward_fidelity_{a.data}", main(a.blocks, a.long_epochs, a.data))))
