"""The result of one candidate's evaluation: what every evaluator returns, executors pass on,
the store records and the agent learns from. A plain, picklable, JSON-able dict.

Statuses. Only what is the candidate's own fault is a result the agent learns from:

* ``ok``: trained; ``reward`` is the shaped reward.
* ``invalid``: the block breaks a rule of the NSC space (reward 0).
* ``diverged``: a non-finite training loss (reward 0).
* ``oom``: the candidate does not fit in the device's memory (reward 0; ``error`` gives its size).
* ``timeout``: the evaluation ran past ``evaluator.timeout_s`` (reward 0).

``cost`` is what the evaluation stands for in training seconds where that differs from its
``wall_time`` (a table's recorded training time: ``evaluator=nb201``); None otherwise.

``widths`` are the network's stage widths where a budget (``network.params``/``flops``)
chose them; None at a fixed width.

``train_loss`` is the mean training loss of each epoch of the proxy training (like ``history``,
the validation accuracy of each epoch); its sum is the training speed estimate TSE (Ru et al.,
NeurIPS 2021), which BENCHMARKS.md "Proxy fidelity" scores as a proxy. Empty where nothing was
trained (the table and surrogate evaluators).

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

#: Statuses whose reward was measured by evaluating the block (the candidate's own result).
MEASURED_STATUSES = ("ok", "invalid", "diverged", "oom")


#: The running counts of a search's finished episodes (progress line, W&B, summary): each
#: finished episode adds to exactly one (re-evaluations, fresh draws of a reused block, are
#: counted apart). ``trained`` is what ``search.max_trainings`` spends.
COUNTS = ("trained", "invalid_total", "reused_total", "predicted_total")


def count_name(status: str, reused: bool, predicted: bool) -> str:
    """Which of ``COUNTS`` a finished episode adds to: a reused or predicted result costs no
    training, and neither does an ``invalid`` one (refused before any training: over the
    budget, parameter-free at a budget, not buildable), so a search's budget in trainings
    (``search.max_trainings``) counts real trainings only."""
    if reused:
        return "reused_total"
    if predicted:
        return "predicted_total"
    return "invalid_total" if status == "invalid" else "trained"


def is_measured(row: dict[str, Any]) -> bool:
    """The one predicate for "a measured episode" (or re-evaluation): its reward came from
    evaluating the block, not from a prediction, and it neither failed (a bug, a lost worker),
    timed out, nor is still running. best_block.json, topk.json, the console table,
    rewards.png's best-so-far, the HTML and comparison reports, W&B's summary and the
    predictor's training data count these only (reused episodes are measured: they carry a
    measured result)."""
    return (
        row.get("status") in MEASURED_STATUSES
        and not row.get("predicted")
        and row.get("reward") is not None
    )


def evaluation_seed(seed: int, repeat: int) -> int:
    """The training seed of a block's ``repeat``-th evaluation in a search seeded ``seed``:
    the search's seed for the first (repeat 0), fresh distinct seeds for re-evaluations."""
    return (
        int(seed)
        if int(repeat) == 0
        else (int(seed) * 1_000_003 + int(repeat) * 7_919) % (2**31 - 1)
    )


FIELDS = (
    "status",
    "reward",
    "accuracy",
    "flops",
    "params",
    "density",
    "epochs",
    "restarts",
    "wall_time",
    "error",
    "history",
    "cost",
    "widths",
    "train_loss",
)


def empty_result(status: str, error: str | None = None, **values: Any) -> dict[str, Any]:
    """A result with every field, reward 0 unless given."""
    if status not in STATUSES:
        raise ValueError(f"unknown result status {status!r}; known: {', '.join(STATUSES)}")
    return {
        "status": status,
        "reward": 0.0,
        "accuracy": None,
        "flops": None,
        "params": None,
        "density": None,
        "epochs": 0,
        "restarts": 0,
        "wall_time": 0.0,
        "error": error,
        "history": [],
        "cost": None,
        "widths": None,
        "train_loss": [],
        **values,
    }


def widths_text(widths) -> str | None:
    """Stage widths as one value for a table cell, a CSV cell or a W&B metric: ``12/24/48``."""
    return None if not widths else "/".join(str(int(w)) for w in widths)


def failure(exc: BaseException, where: str = "") -> dict[str, Any]:
    """A ``failed`` result carrying the exception's full traceback (its remote part too, as
    process pools and Ray attach it)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return empty_result("failed", (f"{where}: " if where else "") + text[-8000:])
