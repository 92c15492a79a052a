"""One rank of a DDP candidate (``torchrun ... -m blockqnn.evaluator.ddp_worker <in> <out>``,
launched by :func:`blockqnn.evaluator.ddp.evaluate_ddp`): trains the candidate under Lightning's
ddp strategy and writes the result (rank 0), or, when this rank fails on its own, its result and
a non-zero exit so that torchrun stops every rank at once."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from blockqnn.evaluator.lightning import LightningEvaluator
from blockqnn.evaluator.training import train_candidate
from blockqnn.lifetime import OWNER_ENV, die_with_parent


def tie_to_launcher() -> None:
    """This rank dies with torchrun, which dies with the launcher that names itself in
    OWNER_ENV (:func:`blockqnn.evaluator.ddp.evaluate_ddp`); a rank that gets here after
    torchrun died exits at once."""
    owner = os.environ.get(OWNER_ENV)
    die_with_parent(owner=int(owner) if owner else None)


def main(src: str, dst: str) -> None:
    tie_to_launcher()
    job = json.loads(Path(src).read_text())
    run = job["run"]
    seed = run.pop(
        "eval_seed", None
    )  # a re-evaluation's training seed (LightningEvaluator.__call__)
    world = int(os.environ["LOCAL_WORLD_SIZE"])
    run["trainer"] = {**run["trainer"], "strategy": "ddp", "devices": world}
    run["recipe"] = {
        **run["recipe"],
        "batch_size": int(run["recipe"]["batch_size"]) // world,
    }  # per rank
    evaluator = LightningEvaluator(
        OmegaConf.create(run), devices=1, timeout_s=run["evaluator"].get("timeout_s")
    )
    result = train_candidate(
        job["nsc"],
        evaluator.run,
        evaluator.datamodule,
        evaluator.network_spec(),
        evaluator.reference_flops,
        evaluator.timeout_s,
        devices=world,
        seed=seed,
    )
    rank = int(os.environ.get("RANK", "0"))
    if result.get("status") != "ok":
        # This rank failed on its own (OOM, divergence, its time limit) while the others may be
        # waiting for it in a collective: it writes the candidate's result and exits non-zero,
        # so torchrun stops every rank at once (the ranks agree without waiting for the
        # backend's timeout).
        Path(f"{dst}.rank{rank}").write_text(json.dumps(result))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    if rank == 0:
        Path(dst).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
