"""Faults injected into real searches (``evaluator._target_=tests.faults.FaultyEvaluator``):
the BlockQNN-Bench surrogate, slowed down and made to hang or crash on chosen blocks."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import psutil

from blockqnn.evaluator import evaluator_spec
from blockqnn.evaluator.surrogate import SurrogateEvaluator
from blockqnn.space.nsc import Block


class FaultyEvaluator(SurrogateEvaluator):
    """The surrogate evaluator, each evaluation taking ``sleep_s``; a block whose canonical key
    hashes to 0 modulo ``every`` hangs (``fault=hang``: sleeps for ever; ``fault=hang_hard``: the
    same, deaf to SIGALRM, as a hang in C code would be) or kills its own
    process with SIGKILL (``fault=crash``, as the OOM killer does). Each attempt at a faulty
    block (at any block when there is no fault) appends its key to ``log`` (one line per
    attempt: the key and the evaluating process), so tests count the attempts."""

    def __init__(
        self,
        run,
        fault: str | None = None,
        every: int = 4,
        sleep_s: float = 0.0,
        log: str | None = None,
        setup_s: float = 0.0,
        gate: str | None = None,
        jitter_s: float = 0.0,
        **surrogate,
    ):
        super().__init__(
            run,
            **{
                "table": None,
                "model": "forest",
                "noise_std": None,
                "num_classes": None,
                **surrogate,
            },
        )
        self.fault, self.every, self.sleep_s, self.log = fault, int(every), float(sleep_s), log
        self.setup_s = float(
            setup_s
        )  # a slow worker start-up (loading data), before any evaluation
        self.gate = gate  # while this file exists, every evaluation waits (a search held open)
        # Each block's evaluation takes sleep_s plus up to jitter_s more, by its key: results
        # of parallel workers arrive out of episode order (an asynchronous search's case).
        self.jitter_s = float(jitter_s)

    def prepare(self) -> None:
        if self._model is None and self.setup_s:
            time.sleep(self.setup_s)
        super().prepare()

    def faulty(self, nsc) -> bool:
        key = Block.parse(nsc).key
        return (
            self.fault is not None
            and int(hashlib.sha1(key.encode()).hexdigest(), 16) % self.every == 0
        )

    def __call__(self, nsc, repeat=0):
        if self.fault is None and self.log:  # on entry: a test can wait for the evaluation to start
            with open(self.log, "a") as f:
                f.write(f"{Block.parse(nsc).key} {os.getpid()}\n")
        while self.gate and os.path.exists(self.gate):
            time.sleep(0.05)
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
        spread = int(hashlib.sha1(Block.parse(nsc).key.encode()).hexdigest(), 16) % 10 / 9
        start = time.perf_counter()
        time.sleep(self.sleep_s + self.jitter_s * spread)
        result = super().__call__(nsc, repeat)
        # The time slept is the evaluation's (a slow candidate): the loop commits accordingly.
        return {**result, "wall_time": time.perf_counter() - start}


def attempts(log: str | Path) -> dict[str, int]:
    """Attempts per faulty block key, from the evaluator's log."""
    out: dict[str, int] = {}
    path = Path(log)
    for line in path.read_text().splitlines() if path.exists() else []:
        key = line.split()[0]
        out[key] = out.get(key, 0) + 1
    return out


# What the fault tests share (tests/test_faults.py, and its subprocesses import them from here).
FAULTY = [
    "evaluator=surrogate",
    "evaluator._target_=tests.faults.FaultyEvaluator",
    "logger=none",
    "space.max_layers=6",
    "agent.batch_size=4",
    "agent.epsilon_schedule=[[1.0,2],[0.5,1]]",
]
GOOD, BAD = [[1, 1, 3, 0, 0]], [[1, 1, 1, 0, 0]]  # with every=2: BAD's key is faulty, GOOD's is not


def spec(*overrides):
    # tests.conftest imports pytest: kept out of the search workers that import this module
    from tests.conftest import compose_search

    return evaluator_spec(compose_search(*FAULTY, *overrides))


def drain(executor, limit=240):
    results, deadline = {}, time.time() + limit
    while executor.in_flight and time.time() < deadline:
        results.update(executor.wait())
    return results


def evaluating():
    """Processes running a Ray evaluation task (Ray titles a busy worker by its function)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any("ray::_ray_evaluate" in part for part in (p.info["cmdline"] or [])):
            out.append(p.pid)
    return out


def search_killed_after(
    results: int, argv: list[str], kind: str = "finish", commit_every: int | None = None
) -> None:
    """Run ``search.py argv`` in this process and SIGKILL it right after it has recorded its
    ``results``-th result (counted from this process's start; ``kind``: ``finish`` counts
    episodes, ``finish_reevaluation`` re-evaluations): the kill lands at a chosen point of a
    search, between a result's write and its group commit, whatever the machine's speed.
    ``commit_every``: the loop's group commits come every that many results (episodes and
    re-evaluations) instead of once a second, so what a kill loses is the same on any machine
    (an instant search of a thousand episodes can finish inside its first second). Run as
    ``python -c "from tests.faults import search_killed_after; ..."`` from the repo root."""
    import runpy
    import sys

    from blockqnn.search.loop import Search
    from blockqnn.search.store import SearchStore

    seen, since = [0], [0]  # results of `kind` recorded; results since the last commit

    def counted(name):
        record = getattr(SearchStore, name)

        def record_then_maybe_die(self, *args, **kwargs):
            record(self, *args, **kwargs)
            since[0] += 1
            if name == kind:
                seen[0] += 1
                if seen[0] >= results:
                    os.kill(os.getpid(), signal.SIGKILL)

        setattr(SearchStore, name, record_then_maybe_die)

    for name in {"finish", "finish_reevaluation", kind}:
        counted(name)
    if commit_every is not None:
        commit = Search._commit

        def commit_and_count(self):
            commit(self)
            since[0] = 0

        def maybe_commit(self):
            if self.store.uncommitted and since[0] >= commit_every:
                self._commit()

        Search._commit, Search._maybe_commit = commit_and_count, maybe_commit
    root = Path(__file__).resolve().parents[1]
    sys.argv = [str(root / "search.py"), *argv]
    runpy.run_path(str(root / "search.py"), run_name="__main__")


def search_killed_between_commit_and_logs(flushes: int, argv: list[str]) -> None:
    """Run ``search.py argv`` in this process and SIGKILL it at its ``flushes``-th commit that
    left episodes for the loggers, after the store committed them and before any logger got
    them: the window a kill must not turn into a lost or a doubled log row."""
    import runpy
    import sys

    from blockqnn.search.loop import Search

    flush, seen = Search._flush_logs, [0]

    def flush_or_die(self):
        if self._unlogged:
            seen[0] += 1
            if seen[0] >= flushes:
                os.kill(os.getpid(), signal.SIGKILL)
        flush(self)

    Search._flush_logs = flush_or_die
    root = Path(__file__).resolve().parents[1]
    sys.argv = [str(root / "search.py"), *argv]
    runpy.run_path(str(root / "search.py"), run_name="__main__")


def killed_search(
    results: int,
    argv: list[str],
    kind: str = "finish",
    commit_every: int | None = None,
    timeout: float = 600,
):
    """``search_killed_after`` in a subprocess (from the repo root); returns the finished
    process, whose return code is -SIGKILL when the kill came."""
    import subprocess
    import sys

    code = (
        "from tests.faults import search_killed_after; "
        f"search_killed_after({results}, {argv!r}, {kind!r}, {commit_every!r})"
    )
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=timeout
    )


def search_signalled(argv: list[str], at_result: int | None, in_outputs: bool, in_close: bool):
    """Run ``search.py argv`` in this process and send it SIGTERM: after its ``at_result``-th
    recorded result (None: never), while it writes its final outputs (``in_outputs``), and
    while it closes its executor (``in_close``: a scheduler's second SIGTERM). Events, not the
    clock."""
    import runpy
    import sys

    from blockqnn import executors
    from blockqnn.search import loop
    from blockqnn.search.store import SearchStore

    def term():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # bytecodes: where CPython runs the Python handler
            pass

    if at_result is not None:
        finish, seen = SearchStore.finish, [0]

        def finish_then_term(self, *args, **kwargs):
            finish(self, *args, **kwargs)
            seen[0] += 1
            if seen[0] == at_result:
                term()

        SearchStore.finish = finish_then_term
    if in_outputs:
        write = loop.write_outputs

        def write_with_term(*args, **kwargs):
            term()
            return write(*args, **kwargs)

        loop.write_outputs = write_with_term
    if in_close:
        close = executors.LocalExecutor.close

        def close_with_term(self):
            term()
            return close(self)

        executors.LocalExecutor.close = close_with_term
    root = Path(__file__).resolve().parents[1]
    sys.argv = [str(root / "search.py"), *argv]
    runpy.run_path(str(root / "search.py"), run_name="__main__")
