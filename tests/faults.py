"""Faults injected into real searches (``evaluator._target_=tests.faults.FaultyEvaluator``):
the BlockQNN-Bench surrogate, slowed down and made to hang or crash on chosen blocks."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from blockqnn.evaluator.surrogate import SurrogateEvaluator
from blockqnn.space.nsc import Block


class FaultyEvaluator(SurrogateEvaluator):
    """The surrogate evaluator, each evaluation taking ``sleep_s``; a block whose canonical key
    hashes to 0 modulo ``every`` hangs (``fault=hang``: sleeps for ever; ``fault=hang_hard``: the
    same, deaf to SIGALRM, as a hang in C code would be) or kills its own
    process with SIGKILL (``fault=crash``, as the OOM killer does). Each attempt at a faulty
    block (at any block when there is no fault) appends its key to ``log`` (one line per
    attempt: the key and the evaluating process), so tests count the attempts."""

    def __init__(self, run, fault: str | None = None, every: int = 4, sleep_s: float = 0.0, log: str | None = None,
                 **surrogate):
        super().__init__(run, **{"table": None, "model": "forest", "noise_std": None, "num_classes": None,
                                 **surrogate})
        self.fault, self.every, self.sleep_s, self.log = fault, int(every), float(sleep_s), log

    def faulty(self, nsc) -> bool:
        key = Block.parse(nsc).key
        return self.fault is not None and int(hashlib.sha1(key.encode()).hexdigest(), 16) % self.every == 0

    def __call__(self, nsc):
        if self.fault is None and self.log:
            with open(self.log, "a") as f:
                f.write(f"{Block.parse(nsc).key} {os.getpid()}\n")
        if self.faulty(nsc):
            if self.log:
                with open(self.log, "a") as f:
                    f.write(f"{Block.parse(nsc).key} {os.getpid()}\n")
            if self.fault in ("hang", "hang_hard"):
                if self.fault == "hang_hard":
                    signal.signal(signal.SIGALRM, signal.SIG_IGN)
                while True:
                    time.sleep(1.0)
            if self.fault == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep_s)
        return super().__call__(nsc)


def attempts(log: str | Path) -> dict[str, int]:
    """Attempts per faulty block key, from the evaluator's log."""
    out: dict[str, int] = {}
    path = Path(log)
    for line in path.read_text().splitlines() if path.exists() else []:
        key = line.split()[0]
        out[key] = out.get(key, 0) + 1
    return out
