"""Searches that close cleanly (any exception, Ctrl-C, SIGTERM, a killed master), one master per
run folder, resumes that refuse another recipe, W&B that holds every episode after kills, and
the schedule's own iteration size."""

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from blockqnn.search.loop import Search
from tests.conftest import ROOT, FakeEvaluator, compose_search
from tests.helpers import finished, search_argv

SLOW_SURROGATE = [
    "evaluator=surrogate",
    "evaluator._target_=tests.faults.FaultyEvaluator",
    "logger=none",
    "space.max_layers=6",
    "agent.epsilon_schedule=[[1.0,4],[0.5,4]]",
    "agent.batch_size=4",
    "search.reevaluate.top=0",
]


def _pool_workers(pid):
    """Live descendants of ``pid`` that are multiprocessing workers (spawned children)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]


def _cmdline(p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(procs, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and _alive(procs):
        time.sleep(0.1)
    return _alive(procs)


def test_paper_schedule_plans_11392_blocks_whatever_the_agent(tmp_path):
    from rich.console import Console

    for agent in ("qlearning", "random"):
        buf = io.StringIO()
        console = Console(file=buf, width=120, force_terminal=False, color_system=None)
        cfg = compose_search(
            "logger=none", f"agent={agent}", "agent.epsilon_schedule=paper", "search.max_episodes=3"
        )
        Search(cfg, tmp_path / agent, evaluator=FakeEvaluator(), console=console).run()
        flat = " ".join(re.sub("[│╭╮╰╯─]", " ", buf.getvalue()).split())
        assert "paper: 178 iterations x 64 = 11,392 blocks; this run stops at 3" in flat
    # an explicit agent.batch_size still wins; a list of pairs takes 8 per iteration
    from blockqnn.search.setup import schedule_of

    assert (
        schedule_of(compose_search("agent.epsilon_schedule=paper", "agent.batch_size=8")).planned
        == 1424
    )
    assert schedule_of(compose_search("agent.epsilon_schedule=[[1.0,3]]")).planned == 24
    assert schedule_of(compose_search("experiment=paper")).planned == 11392


class _Boom(Exception):
    pass


def test_an_unexpected_exception_leaves_no_worker_behind(tmp_path, monkeypatch):
    """Any exception inside the loop closes the pool: its workers are gone, the store and the
    folder's lock released (a resume runs)."""
    cfg = compose_search(*SLOW_SURROGATE, "executor=pool", "+evaluator.sleep_s=0.3")
    search = Search(cfg, tmp_path)
    seen = {}
    original = Search._finish

    def boom(self, episode, *args, **kwargs):
        seen["workers"] = [(p, _cmdline(p)) for p in _pool_workers(os.getpid())]
        original(self, episode, *args, **kwargs)
        if episode == 2:
            raise _Boom("a bug in the loop")

    monkeypatch.setattr(Search, "_finish", boom)
    with pytest.raises(_Boom):
        search.run()
    # the pool's spawned workers only (not Ray or other helpers earlier tests left running)
    workers = [
        p for p, cmd in seen["workers"] if "spawn_main" in cmd and "resource_tracker" not in cmd
    ]
    assert workers, "the pool had no workers while it ran"
    assert not _wait_gone(workers, 5), "pool workers outlived the search"
    monkeypatch.setattr(Search, "_finish", original)
    Search(cfg, tmp_path).run()  # the lock and the store were released
    assert finished(tmp_path) == 32


@pytest.mark.slow
def test_pool_workers_exit_when_their_master_is_killed(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        search_argv(run, *SLOW_SURROGATE, "executor=pool", "+evaluator.sleep_s=2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = [p for p in _pool_workers(proc.pid) if "resource_tracker" not in _cmdline(p)]
        time.sleep(0.2)
    assert len(workers) >= 2, "no pool workers started"
    everything = _pool_workers(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not _wait_gone(everything, 10), (
        f"left running: {[p.cmdline() for p in _alive(everything)]}"
    )


#: (signal, executor, exit code, what the console says): Ctrl-C at a terminal, SIGTERM from a
#: scheduler's preemption (with pool workers that must go with the master).
STOPS = {
    "ctrl-c, local": (signal.SIGINT, "local", 130, "interrupted"),
    "sigterm, pool": (signal.SIGTERM, "pool", 143, "terminated (SIGTERM)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stop", sorted(STOPS))
def test_a_signal_stops_the_search_within_seconds_and_it_resumes(tmp_path, stop):
    signum, executor, code, said = STOPS[stop]
    run = tmp_path / "run"
    cmd = search_argv(
        run,
        *SLOW_SURROGATE,
        f"executor={executor}",
        "+evaluator.sleep_s=0.3",
        "agent.epsilon_schedule=[[1.0,2],[0.5,2]]",
    )
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.time() + 120
    while time.time() < deadline and finished(run) < 4:
        time.sleep(0.1)
    everything = _pool_workers(proc.pid)
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err[-2000:]
    # It stopped at the signal rather than finishing its 16 episodes (an outcome, not a clock).
    assert finished(run) < 16
    assert said in err and "Traceback" not in err
    assert f"resume with: python search.py hydra.run.dir={run}" in err.replace("\n", "")
    assert not _wait_gone(everything, 10)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    con = sqlite3.connect(run / "search.db")
    assert [
        r[0] for r in con.execute("SELECT id FROM episodes WHERE status = 'ok' ORDER BY id")
    ] == list(range(16))


def test_pool_replaces_a_worker_killed_right_after_its_result():
    from blockqnn.evaluator import evaluator_spec
    from blockqnn.executors import PoolExecutor

    spec = evaluator_spec(compose_search(*SLOW_SURROGATE))
    pool = PoolExecutor(
        spec, workers_per_gpu=1, cpu_workers=1, gpus=[], threads_per_cpu_worker=1, max_retries=0
    )
    try:
        nsc = [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]
        pool.submit("a", nsc)
        first = pool.wait()
        assert first[0][1]["status"] == "ok"
        worker = list(pool.pools[0]._processes.values())[0]
        os.kill(
            worker.pid, signal.SIGKILL
        )  # dies after its result came back, before the next submit
        worker.join(5)
        deadline = time.time() + 30  # until the pool has noticed (an event, not a guessed sleep)
        while not pool.pools[0]._broken and time.time() < deadline:
            time.sleep(0.01)
        assert pool.pools[0]._broken, "the pool never noticed its dead worker"
        pool.submit("b", nsc)  # must not raise: the slot gets a new worker
        out = []
        while not out:
            out = pool.wait()
        assert out[0][0] == "b" and out[0][1]["status"] == "ok"
        assert out[0][1]["reward"] == first[0][1]["reward"]
    finally:
        pool.close()


@pytest.mark.slow
def test_one_master_per_run_folder(tmp_path):
    """A second search on a live folder is refused at once, naming the other process, and
    changes nothing; once that process is dead (SIGKILL), the folder resumes. The first search
    is held open by a gate file (its evaluations wait while it exists), so no timing decides."""
    run, gate = tmp_path / "run", tmp_path / "gate"
    gate.write_text("")
    extra = [*SLOW_SURROGATE, f"+evaluator.gate={gate}"]
    first = subprocess.Popen(
        search_argv(run, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
    )
    deadline = time.time() + 120
    lock = run / "search.lock"
    while time.time() < deadline and not (lock.exists() and str(first.pid) in lock.read_text()):
        time.sleep(0.1)
    assert first.poll() is None
    second = subprocess.run(
        search_argv(run, *extra), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-2000:]
    assert f"process {first.pid} on host" in second.stderr
    assert "in use by a running search" in second.stderr
    first.send_signal(signal.SIGKILL)
    first.wait()
    gate.unlink()
    done = subprocess.run(
        search_argv(run, *extra), capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    con = sqlite3.connect(run / "search.db")
    ids = [r[0] for r in con.execute("SELECT id FROM episodes ORDER BY id")]
    assert ids == list(range(32))  # each once: the refused second search wrote nothing


def test_the_lock_refuses_in_process_and_frees_on_exit(tmp_path):
    from blockqnn.search.lock import FolderInUse, RunLock

    with RunLock(tmp_path):
        with pytest.raises(FolderInUse, match=f"process {os.getpid()} on host"):
            with RunLock(tmp_path):
                pass
    with RunLock(tmp_path):  # released
        pass
    assert (tmp_path / "search.lock").read_text() == ""  # a clean exit names no owner


def test_a_filesystem_without_locks_is_named_not_taken_for_a_live_owner(tmp_path, monkeypatch):
    import errno
    import fcntl

    from blockqnn.search import lock

    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(
        lock.LocksUnsupported, match="does not support file locks.*BLOCKQNN_NO_LOCK=1"
    ):
        with lock.RunLock(tmp_path):
            pass
    monkeypatch.setenv("BLOCKQNN_NO_LOCK", "1")
    with lock.RunLock(tmp_path):  # the user's choice: run without the guard
        pass


@pytest.mark.parametrize(
    "change,key",
    [
        ("trainer.gradient_clip_val=0.5", "trainer.gradient_clip_val"),
        ("trainer.precision=bf16-mixed", "trainer.precision"),
        ("callbacks=early_stopping", "callbacks"),
        ("search.reevaluate.repeats=5", "reevaluate.repeats"),
    ],
)
def test_resume_with_another_recipe_is_refused_naming_the_key(tmp_path, change, key):
    from blockqnn.search.setup import fingerprint
    from blockqnn.search.store import SearchStore, StoreError

    base = ["debug=smoke", "search.max_episodes=2"]
    Search(compose_search(*base), tmp_path, evaluator=FakeEvaluator()).run()
    before = (tmp_path / "search.db").read_bytes()
    with pytest.raises(StoreError, match=re.escape(key)):
        SearchStore(tmp_path / "search.db", fingerprint(compose_search(*base, change)))
    assert (tmp_path / "search.db").read_bytes() == before
    # neutral keys may change: the logger, the cap, the executor, the progress bar
    SearchStore(
        tmp_path / "search.db",
        fingerprint(
            compose_search(
                *base[:1],
                "search.max_episodes=5",
                "logger=none",
                "executor=pool",
                "+trainer.profiler=simple",
            )
        ),
    ).close()


def test_one_predicate_decides_what_is_measured(tmp_path):
    """Failed, timed-out and predicted results never reach best_block, topk, the best-so-far of
    rewards.png, the predictor's data, W&B's catch-up best or the comparison curves."""
    from blockqnn.analysis import fig_rewards
    from blockqnn.compare import curves
    from blockqnn.search.loggers import catch_up_rows
    from blockqnn.search.ranking import ranked

    def ep(i, key, reward, status="ok", predicted=0, reused=0):
        return {
            "id": i,
            "iteration": 0,
            "epsilon": 1.0,
            "key": key,
            "nsc": json.dumps([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]),
            "status": status,
            "reward": reward,
            "accuracy": 0.5,
            "flops": 1,
            "params": 1,
            "density": 1.0,
            "predicted": predicted,
            "reused": reused,
            "wall_time": 0.0,
            "epochs": 1,
            "restarts": 0,
        }

    eps = [
        ep(0, "a", 0.5),
        ep(1, "b", 0.0, "timeout"),
        ep(2, "c", 0.9, predicted=1),
        ep(3, "d", 0.0, "failed"),
        ep(4, "e", 0.6),
        ep(5, "f", 0.0, "invalid"),
    ]
    assert [e["key"] for e in ranked(eps)] == ["e", "a", "f"]
    assert [r["best_reward"] for r in catch_up_rows(eps, set())] == [0.5, 0.5, 0.5, 0.5, 0.6, 0.6]
    assert curves(eps)["best_curve"].tolist() == [0.5, 0.5, 0.5, 0.5, 0.6, 0.6]
    fig = fig_rewards(eps)
    best_line = next(
        line for line in fig.axes[0].get_lines() if line.get_label() == "best measured so far"
    )
    assert max(best_line.get_ydata()) == 0.6
    # the predictor's training data: the store's measured trainings
    from blockqnn.search.store import SearchStore

    store = SearchStore(tmp_path / "search.db", {"x": 1})
    for e in eps:
        store.begin(e["id"], 0, 1.0, e["nsc"], e["key"])
        store.finish(
            e["id"],
            {k: e[k] for k in ("status", "reward", "accuracy")},
            predicted=bool(e["predicted"]),
        )
    store.commit(({}, {}))
    assert [m[0] for m in store.measured()] == [0, 4, 5]
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("logger,mode", [("wandb", "async"), ("csv", "sync")])
def test_loggers_hold_every_episode_once_after_kills_between_commit_and_log(tmp_path, logger, mode):
    """SIGKILL twice right after the store committed episodes and before the loggers got them
    (tests.faults.search_killed_between_commit_and_logs: an event, not the clock), then resume:
    the W&B run's files (or episodes.csv) hold every episode exactly once. Asynchronous: two
    pool workers whose evaluations take different times, so episodes arrive out of order (W&B
    refused those whose step was lower than one it had)."""
    from blockqnn.search.loggers import run_id
    from blockqnn.wandb_files import history_rows

    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)
    extra = [*SLOW_SURROGATE[:2], f"logger={logger}", *SLOW_SURROGATE[3:]]
    extra += ["+evaluator.sleep_s=0.02", "+evaluator.jitter_s=0.2"]
    if mode == "async":
        extra += ["executor=pool", "executor.cpu_workers=2", "search.asynchronous=true"]
    argv = [f"hydra.run.dir={run}", *extra]
    for flushes in (3, 5):  # each process dies at its n-th commit that has episodes to log
        code = (
            "from tests.faults import search_killed_between_commit_and_logs; "
            f"search_killed_between_commit_and_logs({flushes}, {argv!r})"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = subprocess.run(
        search_argv(run, *extra), capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    con = sqlite3.connect(run / "search.db")
    order = [r[0] for r in con.execute("SELECT id FROM episodes ORDER BY finished_at, id")]
    con.close()
    if mode == "async":
        assert order != sorted(order), "no episode arrived out of order: the test saw no such case"
    if logger == "csv":
        with open(run / "episodes.csv", newline="") as f:
            logged = [int(r["episode"]) for r in csv.DictReader(f)]
    else:
        rid = run_id(run)
        logged = []
        for f in (run / "wandb").glob(f"offline-run-*-{rid}*/run-{rid}.wandb"):
            logged += [int(r["episode"]) for r in history_rows(f) if "reward" in r]
    assert sorted(logged) == list(range(32)), sorted(logged)


def test_an_alarm_that_lands_as_the_evaluation_returns_keeps_its_result(monkeypatch):
    """The alarm lands after the evaluation returned, while the timer is being disarmed (here:
    sent from setitimer's call that stops it): the result stands and nothing escapes (before,
    the time-limit exception was raised out of the executor)."""
    import os

    from blockqnn import executors

    real = signal.setitimer

    def stop_late(which, seconds, *rest):
        if seconds == 0:  # disarming: the alarm comes now, as if it had been just due
            os.kill(os.getpid(), signal.SIGALRM)
            for _ in range(1000):  # bytecodes, where CPython runs the Python handler
                pass
        return real(which, seconds, *rest)

    monkeypatch.setattr(executors.signal, "setitimer", stop_late)
    before = signal.getsignal(signal.SIGALRM)
    for _ in range(20):
        assert executors._evaluate_with_alarm(lambda nsc: {"status": "ok"}, [], 30.0, "here") == {
            "status": "ok"
        }
    assert signal.getsignal(signal.SIGALRM) == before


@pytest.mark.parametrize(
    "at_result,in_outputs,in_close,code",
    [
        (None, True, False, 0),  # during the finished search's outputs: they complete, exit 0
        (5, False, True, 143),  # a second SIGTERM while the stopped search closes: 143, clean
    ],
)
def test_stop_signals_while_writing_outputs_or_closing_are_noted_not_raised(
    tmp_path, at_result, in_outputs, in_close, code
):
    run = tmp_path / "run"
    argv = [f"hydra.run.dir={run}", *SLOW_SURROGATE, "search.max_episodes=12"]
    script = (
        "from tests.faults import search_signalled; "
        f"search_signalled({argv!r}, {at_result!r}, {in_outputs!r}, {in_close!r})"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if code == 0:
        assert json.loads((run / "best_block.json").read_text())["nsc"]
        assert "they are complete" in proc.stderr
    else:
        assert "terminated (SIGTERM)" in proc.stderr
        resumed = subprocess.run(
            search_argv(run, *SLOW_SURROGATE, "search.max_episodes=12"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]  # the lock and store were let go


def test_a_hung_wandb_finish_is_bounded(tmp_path, caplog):
    import threading

    from blockqnn.search.loggers import WandbLogger

    logger = WandbLogger.__new__(WandbLogger)  # its W&B thread, hung (an upload that never ends)
    gate = threading.Event()
    logger._thread = threading.Thread(target=gate.wait, daemon=True)
    logger._thread.start()
    logger.finish_timeout_s, logger.run_dir = 0.2, tmp_path
    with caplog.at_level("WARNING", logger="blockqnn.search"):
        logger._join("finish")  # returns after the bound, saying so
    gate.set()
    assert "did not finish within 0.2 s" in caplog.text and "wandb sync" in caplog.text
