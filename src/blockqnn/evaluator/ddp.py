"""DDP per candidate: one candidate trained by ``devices`` processes as its own process group.

The search loop never runs Lightning's in-process ddp (its launcher re-executes the whole
script). Instead :func:`evaluate_ddp` launches ``torchrun --nproc-per-node=k -m
blockqnn.evaluator.ddp <in.json> <out.json>``; every rank trains under Lightning's ddp
strategy (torchrun's environment tells Lightning not to launch anything itself) with
:func:`blockqnn.evaluator.training.train_candidate`, and rank 0 writes the result. The
recipe's batch size is the global batch: each rank takes ``batch_size // k`` (refused when
it does not divide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from blockqnn.result import empty_result


def _kill_group(proc: subprocess.Popen) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def evaluate_ddp(nsc: Any, run: dict, devices: int, timeout: float | None = None) -> dict:
    from blockqnn.errors import ConfigError

    batch = int(run["recipe"]["batch_size"])
    if batch % devices:
        raise ConfigError(f"recipe.batch_size={batch} is the global batch and must divide by "
                          f"evaluator.devices={devices}")
    with tempfile.TemporaryDirectory(prefix="bq-ddp-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"nsc": nsc, "run": run}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "blockqnn.evaluator.ddp", str(src), str(dst)]
        # Its own process group: torchrun and every rank are killed together when the
        # evaluation times out or is interrupted (an executor's hard limit, Ctrl-C).
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=None if timeout is None else timeout + 60)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return empty_result("timeout", f"the DDP evaluation ran past evaluator.timeout_s={timeout:g} s")
        except BaseException:
            _kill_group(proc)
            raise
        if dst.exists():
            return json.loads(dst.read_text())
        tail = (err or out or "")[-3000:]
        raise RuntimeError(f"DDP evaluation with {devices} processes exited {proc.returncode}: {tail}")


def main(src: str, dst: str) -> None:
    from omegaconf import OmegaConf

    from blockqnn.evaluator.lightning import LightningEvaluator
    from blockqnn.evaluator.training import train_candidate

    job = json.loads(Path(src).read_text())
    run = job["run"]
    world = int(os.environ["LOCAL_WORLD_SIZE"])
    run["trainer"] = {**run["trainer"], "strategy": "ddp", "devices": world}
    run["recipe"] = {**run["recipe"], "batch_size": int(run["recipe"]["batch_size"]) // world}  # per rank
    evaluator = LightningEvaluator(OmegaConf.create(run), devices=1, timeout_s=run["evaluator"].get("timeout_s"))
    result = train_candidate(job["nsc"], evaluator.run, evaluator.datamodule, evaluator.network_spec(),
                             evaluator.reference_flops, evaluator.timeout_s, devices=world)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(dst).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
