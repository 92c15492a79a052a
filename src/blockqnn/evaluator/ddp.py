"""DDP per candidate: one candidate trained by ``devices`` processes as its own process group.

The search loop never runs Lightning's in-process ddp (its launcher re-executes the whole
script). Instead :func:`evaluate_ddp` launches ``torchrun --nproc-per-node=k -m
blockqnn.evaluator.ddp <in.json> <out.json>``; every rank trains under Lightning's ddp
strategy (torchrun's environment tells Lightning not to launch anything itself) and rank 0
writes the result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def evaluate_ddp(nsc: Any, cfg: dict, devices: int, timeout: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bq-ddp-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"nsc": nsc, "cfg": cfg}))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
               "-m", "blockqnn.evaluator.ddp", str(src), str(dst)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if dst.exists():
            return json.loads(dst.read_text())
        tail = (proc.stderr or proc.stdout or "")[-1500:]
        raise RuntimeError(f"DDP evaluation with {devices} processes exited {proc.returncode}: {tail}")


def main(src: str, dst: str) -> None:
    from blockqnn.evaluator.proxy import evaluate

    job = json.loads(Path(src).read_text())
    cfg = job["cfg"]
    cfg["trainer"] = {**cfg["trainer"], "strategy": "ddp", "devices": int(os.environ["LOCAL_WORLD_SIZE"]),
                      "deterministic": cfg["trainer"].get("deterministic", False)}
    cfg["ddp_child"] = True
    result = evaluate(job["nsc"], cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(dst).write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
