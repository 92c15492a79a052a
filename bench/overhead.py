"""Framework overhead of a proxy evaluation: the evaluator (Lightning, reward callback,
restart check) against a bare PyTorch loop doing the same epochs, batches and validation
passes on the same 5-layer block and digits data. Target: ratio <= 1.15, and a digits proxy
evaluation of a 5-layer block in <= 3 s. Prints one JSON line last."""

import json
import statistics
import time

import torch

from _common import evaluator_for

from blockqnn.space.network import build_network

BLOCK = [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 0, 2], [4, 6, 0, 1, 3], [5, 2, 3, 0, 0]]
OVERRIDES = ["recipe.epochs=3", "recipe.batch_size=32"]


def bare(ev) -> float:
    t = time.perf_counter()
    run = ev.run
    torch.manual_seed(int(run.seed))
    dm = ev.datamodule
    net = build_network(BLOCK, **ev.network_spec())
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


def main(repeats: int = 5) -> dict:
    evaluator = evaluator_for(*OVERRIDES)
    evaluator(BLOCK), bare(evaluator)  # warm-up: imports, data, first-call costs
    ev, ba = [], []
    for _ in range(repeats):
        r = evaluator(BLOCK)
        assert r["status"] == "ok", r
        ev.append(r["wall_time"])
        ba.append(bare(evaluator))
    e, b = statistics.median(ev), statistics.median(ba)
    return {"bench": "overhead", "data": "digits", "layers": 5, "epochs": 3, "evaluator_s": round(e, 3),
            "bare_s": round(b, 3), "ratio": round(e / b, 3), "threads": torch.get_num_threads()}


if __name__ == "__main__":
    print(json.dumps(main()))
