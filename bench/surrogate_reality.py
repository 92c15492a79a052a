"""A check against reality: the 10 best distinct blocks of a search through the surrogate
(``experiment=bench_table evaluator=surrogate``, Q-learning) and 10 random blocks of the same
space, all trained for real on the bench proxy (``experiment=bench_table``, 2 worker
processes). Do the surrogate's picks rank above the random blocks? Prints the real accuracies,
a one-sided Mann-Whitney U test, Kendall tau between predicted and real accuracy over the 20,
and how many of the picks were in the surrogate's training table. Prints one JSON line last.

usage: python bench/surrogate_reality.py [seed]"""

import io
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, mannwhitneyu

sys.path.insert(0, str(Path(__file__).parent))
from _common import compose_search, evaluate_all  # noqa: E402

from blockqnn.space.nsc import random_block  # noqa: E402


def main(seed: int = 0) -> dict:
    from rich.console import Console

    from blockqnn.evaluator.surrogate import DEFAULT_TABLE, read_table
    from blockqnn.search.loop import Search
    from blockqnn.search.setup import validate

    cfg = compose_search(
        "experiment=bench_table",
        "evaluator=surrogate",
        "logger=none",
        f"seed={seed}",
        "agent.batch_size=16",
        "agent.epsilon_schedule=[[1.0,10],[0.5,5],[0.1,5]]",
    )
    evaluator = validate(cfg)
    with tempfile.TemporaryDirectory(prefix="bq-reality-") as tmp:
        Search(cfg, Path(tmp), evaluator=evaluator, console=Console(file=io.StringIO())).run()
        top = json.loads(
            (Path(tmp) / "topk.json").read_text()
        )  # the best distinct blocks, best first
    picks = [t["nsc"] for t in top][:10]
    rng = random.Random(1000 + seed)
    known = {r["key"] for r in read_table(DEFAULT_TABLE)}
    randoms = [random_block(rng, int(cfg.space.max_layers)).to_list() for _ in range(10)]
    blocks = picks + randoms
    predicted = [float(p) for p in evaluator.predict(blocks)]
    real = evaluate_all(blocks, ["experiment=bench_table", f"seed={seed}"])
    acc = [r["accuracy"] for r in real]
    top_acc, rand_acc = acc[:10], acc[10:]
    from blockqnn.space.nsc import Block

    return {
        "bench": "surrogate_reality",
        "seed": seed,
        "picks_real_accuracy": top_acc,
        "random_real_accuracy": rand_acc,
        "picks_mean": float(np.mean(top_acc)),
        "random_mean": float(np.mean(rand_acc)),
        "mann_whitney_p_picks_greater": float(
            mannwhitneyu(top_acc, rand_acc, alternative="greater").pvalue
        ),
        "tau_predicted_vs_real": float(kendalltau(predicted, acc)[0]),
        "picks_in_table": sum(Block.parse(b).key in known for b in picks),
        "statuses": [r["status"] for r in real],
    }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)))
