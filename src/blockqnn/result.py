"""The result of one candidate's evaluation: what every evaluator returns, executors pass on,
the store records and the agent learns from. A plain, picklable, JSON-able dict.

Statuses. Only what is the candidate's own fault is a result the agent learns from:

* ``ok``: trained; ``reward`` is the shaped reward.
* ``invalid``: the block breaks a rule of the NSC space (reward 0).
* ``diverged``: a non-finite training loss (reward 0).
* ``oom``: the candidate does not fit in the device's memory (reward 0; ``error`` gives its size).
* ``timeout``: the evaluation ran past ``evaluator.timeout_s`` (reward 0).

``failed`` is not the candidate's fault: a bug, a crashed worker, a lost node. It is recorded
with its traceback, the agent is not taught it, and ``search.max_consecutive_failures`` of
them in a row stop the search (README, "When an evaluation fails").
"""

from __future__ import annotations

import traceback
from typing import Any

CANDIDATE_FAULTS = ("invalid", "diverged", "oom", "timeout")
STATUSES = ("ok", *CANDIDATE_FAULTS, "failed")
#: Statuses never reused from the store as a block's result: the block is trained again when
#: it is sampled again (timeouts up to ``search.max_attempts`` evaluations of the block).
RETRIED = ("failed", "timeout")

FIELDS = ("status", "reward", "accuracy", "flops", "params", "density", "epochs", "restarts", "wall_time",
          "error", "history")


def empty_result(status: str, error: str | None = None, **values: Any) -> dict[str, Any]:
    """A result with every field, reward 0 unless given."""
    if status not in STATUSES:
        raise ValueError(f"unknown result status {status!r}; known: {', '.join(STATUSES)}")
    return {"status": status, "reward": 0.0, "accuracy": None, "flops": None, "params": None, "density": None,
            "epochs": 0, "restarts": 0, "wall_time": 0.0, "error": error, "history": [], **values}


def failure(exc: BaseException, where: str = "") -> dict[str, Any]:
    """A ``failed`` result carrying the exception's full traceback (its remote part too, as
    process pools and Ray attach it)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return empty_result("failed", (f"{where}: " if where else "") + text[-8000:])
