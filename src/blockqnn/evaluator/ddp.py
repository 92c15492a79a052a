"""DDP per candidate: one candidate trained by ``devices`` processes as its own process group.

The search loop never runs Lightning's in-process ddp (its launcher re-executes the whole
script). Instead :func:`evaluate_ddp` launches ``torchrun --nproc-per-node=k -m
blockqnn.evaluator.ddp <in.json> <out.json>``; every rank trains under Lightning's ddp
strategy (torchrun's environment tells Lightning not to launch anything itself) with
:func:`blockqnn.evaluator.training.train_candidate`, and rank 0 writes the result. A rank whose
candidate fails on its own (out of memory on its device, say) writes that result and exits
non-zero: torchrun then stops every rank at once, and the candidate gets that rank's result
(the others never wait in a collective for a rank that is gone). The
recipe's batch size is the global batch: each rank takes ``batch_size // k`` (refused when
it does not divide)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from blockqnn.errors import ConfigError
from blockqnn.lifetime import OWNER_ENV, dies_with
from blockqnn.result import empty_result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def evaluate_ddp(nsc: Any, run: dict, devices: int, timeout: float | None = None) -> dict:
    batch = int(run["recipe"]["batch_size"])
    if batch % devices:
        raise ConfigError(
            f"recipe.batch_size={batch} is the global batch and must divide by "
            f"evaluator.devices={devices}"
        )
    with tempfile.TemporaryDirectory(prefix="bq-ddp-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"nsc": nsc, "run": run}))
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={devices}",
            "-m",
            "blockqnn.evaluator.ddp_worker",
            str(src),
            str(dst),
        ]
        # Its own process group: torchrun and every rank are killed together when the
        # evaluation times out or is interrupted (an executor's hard limit, Ctrl-C). And its
        # life tied to this process: when this process dies without a word (a SIGKILLed
        # master, a pool worker killed for a hung candidate, the OOM killer), the kernel kills
        # torchrun, and each rank dies with torchrun (ddp_worker; torchrun starts each rank in
        # a session of its own, so the group kill does not reach them), so nothing holds the
        # devices. The ranks learn this process from OWNER_ENV: one still importing when
        # torchrun died finds itself re-parented and exits.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, OWNER_ENV: str(os.getpid())},
            start_new_session=True,
            preexec_fn=dies_with(os.getpid()),
        )
        try:
            out, err = proc.communicate(timeout=None if timeout is None else timeout + 60)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return empty_result(
                "timeout", f"the DDP evaluation ran past evaluator.timeout_s={timeout:g} s"
            )
        except BaseException:
            _kill_group(proc)
            raise
        failed = sorted(Path(tmp).glob("out.json.rank*"))
        if (
            failed
        ):  # a rank's own candidate fault (OOM, divergence, time limit): the candidate's result
            return json.loads(failed[0].read_text())
        if dst.exists():
            return json.loads(dst.read_text())
        tail = (err or out or "")[-3000:]
        raise RuntimeError(
            f"DDP evaluation with {devices} processes exited {proc.returncode}: {tail}"
        )
