"""Faults of distributed searches, injected for real: a hung candidate under every executor, a
block that crashes its worker every time, a Ray cluster that loses a node, a master killed
with evaluations in flight on Ray (tests/faults.py: the surrogate, slowed or made faulty)."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.faults import BAD, FAULTY, GOOD, attempts, drain, evaluating, spec
from tests.helpers import MACHINE_WIDE

pytestmark = MACHINE_WIDE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _rows(run):
    con = sqlite3.connect(f"file:{run / 'search.db'}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT id, nsc, status, reward, error, told FROM episodes ORDER BY id"
    ).fetchall()
    con.close()
    return rows


def _search(run, *extra, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "search.py"), *FAULTY, f"hydra.run.dir={run}", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
    )


def test_a_hung_candidate_is_stopped_by_the_local_executor(tmp_path):
    run, log = tmp_path / "run", tmp_path / "attempts.txt"
    out = _search(
        run,
        "+evaluator.fault=hang",
        "+evaluator.every=3",
        f"+evaluator.log={log}",
        "evaluator.timeout_s=1",
        "search.max_attempts=1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = _rows(run)
    hung = attempts(log)
    assert len(rows) == 12 and hung, "no block hung: choose another every"
    timeouts = [r for r in rows if r[2] == "timeout"]
    assert timeouts and all(r[3] == 0.0 and r[5] is not None for r in timeouts)  # reward 0, taught
    assert all("stopped by the executor (interrupted in this process)" in r[4] for r in timeouts)
    assert all(r[2] == "ok" for r in rows if r not in timeouts)
    assert sum(hung.values()) == len(hung)  # max_attempts=1: each hung block was tried once


@pytest.mark.slow
def test_the_pool_kills_and_replaces_a_hung_worker_and_a_crash_looping_block_fails(tmp_path):
    from blockqnn.executors import PoolExecutor

    log = tmp_path / "attempts"
    pool = PoolExecutor(
        spec(
            "+evaluator.fault=hang",
            "+evaluator.every=2",
            "evaluator.timeout_s=1",
            f"+evaluator.log={log}",
        ),
        workers_per_gpu=1,
        cpu_workers=2,
        gpus=[],
        threads_per_cpu_worker=1,
        max_retries=1,
    )
    try:
        pool.submit("bad", BAD)
        pool.submit("good", GOOD)
        # until the bad block hangs in its worker (an event): its line in the log is complete
        # (the file exists a moment before its line is written)
        deadline, line = time.time() + 120, ""
        while not line.endswith("\n") and time.time() < deadline:
            line = log.read_text() if log.exists() else ""
            time.sleep(0.02)
        hung_pid = int(line.split()[1])  # the worker that hangs
        results = drain(pool)
        assert (
            results["bad"]["status"] == "timeout"
            and "killed and replaced" in results["bad"]["error"]
        )
        assert results["good"]["status"] == "ok"
        assert (
            not psutil.pid_exists(hung_pid)
            or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE
        )
        assert pool.replaced == 1 and pool.retries == 0
        pool.submit("again", GOOD)  # the replacement worker evaluates
        assert drain(pool)["again"]["status"] == "ok"
    finally:
        pool.close()


@pytest.mark.slow
def test_a_block_that_crashes_its_pool_worker_is_retried_then_failed(tmp_path):
    from blockqnn.executors import PoolExecutor

    log = tmp_path / "attempts.txt"
    pool = PoolExecutor(
        spec("+evaluator.fault=crash", "+evaluator.every=2", f"+evaluator.log={log}"),
        workers_per_gpu=1,
        cpu_workers=2,
        gpus=[],
        threads_per_cpu_worker=1,
        max_retries=2,
    )
    try:
        pool.submit("bad", BAD)
        pool.submit("good", GOOD)
        results = drain(pool)
    finally:
        pool.close()
    assert results["good"]["status"] == "ok"
    assert results["bad"]["status"] == "failed" and "died 3 times" in results["bad"]["error"]
    assert list(attempts(log).values()) == [3]  # the first try and max_retries=2 more


@pytest.mark.slow
def test_ray_stops_hung_tasks_and_fails_a_crash_looping_block(tmp_path):
    code = f"""
import json, sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.faults import spec, drain, evaluating, BAD, GOOD
from blockqnn import executors
from blockqnn.executors import RayExecutor
out = {{}}
for fault in ("hang", "hang_hard", "crash"):
    # The force-cancel backstop: its default where the worker's own alarm must act, sooner for
    # a hang deaf to it. It counts from when the worker began the evaluation: a worker whose
    # start-up (8 s here) outlasts the hard limit and the slack (3 + 2 s grace + 2 s) is never
    # cancelled for it; the good block's evaluation (the surrogate, prepared before the limit
    # starts) is instant, so a loaded machine still has seconds of slack for it.
    executors.RAY_SLACK_S = 2.0 if fault == "hang_hard" else 30.0
    setup = ["+evaluator.setup_s=8"] if fault == "hang_hard" else []
    ex = RayExecutor(spec("+evaluator.fault=" + fault, "+evaluator.every=2", "evaluator.timeout_s=3",
                           "+evaluator.log={tmp_path}/" + fault, *setup), address=None, num_cpus=1, num_gpus=0,
                     max_in_flight=None, max_retries=1, include_dashboard=False, local_cpus=2)
    ex.submit("bad", BAD); ex.submit("good", GOOD)
    out[fault] = {{k: [v["status"], v["error"]] for k, v in drain(ex).items()}}
    deadline = time.time() + 10  # a cancelled task's worker takes a moment to go
    while evaluating() and time.time() < deadline:
        time.sleep(0.1)
    out[fault]["left"] = evaluating()
print("RESULT", json.dumps(out), flush=True)  # before any exit hook of Ray
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=400, env=ENV, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    # Ray forwards its workers' output to this stdout from a thread of its own, so the line
    # may not start with RESULT
    found = [line.split("RESULT ", 1)[1] for line in out.stdout.splitlines() if "RESULT " in line]
    assert found, f"no RESULT line:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    res = json.loads(found[-1])
    for fault in ("hang", "hang_hard", "crash"):
        assert res[fault]["good"][0] == "ok" and res[fault]["left"] == [], (fault, res[fault])
    assert (
        res["hang"]["bad"][0] == "timeout"
        and "interrupted in its Ray worker" in res["hang"]["bad"][1]
    )
    assert (
        res["hang_hard"]["bad"][0] == "timeout"
        and "cancelled with force=True" in res["hang_hard"]["bad"][1]
    )
    assert res["crash"]["bad"][0] == "failed"
    assert list(attempts(tmp_path / "crash").values()) == [
        2
    ]  # the first try and max_retries=1 more


# --- a Ray cluster of two nodes on this machine -------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The undisturbed search (local executor, same seed, synchronous): the blocks to expect."""
    run = tmp_path_factory.mktemp("ref") / "run"
    out = _search(run, "search.max_episodes=8", "agent.epsilon_schedule=[[1.0,1],[0.5,1]]")
    assert out.returncode == 0, out.stderr[-3000:]
    return [(r[0], r[1], r[2]) for r in _rows(run)]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    yield c
    c.shutdown()


def _wait_rows(run, n, proc, limit=180):
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if (run / "search.db").exists():
            try:
                if sum(1 for r in _rows(run) if r[2] != "running") >= n:
                    return True
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    return False


def _ray_search(run, cluster, *extra):
    """search.py on the test cluster: 8 slowed faulty-evaluator episodes in two iterations."""
    return [
        sys.executable,
        str(ROOT / "search.py"),
        *FAULTY,
        f"hydra.run.dir={run}",
        "+evaluator.sleep_s=1.0",
        "executor=ray",
        f"executor.address={cluster.address}",
        "search.max_episodes=8",
        "agent.epsilon_schedule=[[1.0,1],[0.5,1]]",
        *extra,
    ]


@pytest.mark.slow
def test_a_ray_cluster_loses_a_worker_node_mid_search(tmp_path, cluster, reference):
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    cmd = _ray_search(run, cluster, f"+evaluator.log={tmp_path / 'attempts'}")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT
    )
    assert _wait_rows(run, 1, proc), "the search did not start"
    raylet = worker.all_processes["raylet"][0].process.pid

    def on_worker_node(pid: int) -> bool:  # an evaluation in progress there (it logged its start)
        try:
            return raylet in [a.pid for a in psutil.Process(pid).parents()]
        except psutil.NoSuchProcess:
            return False

    log, deadline = tmp_path / "attempts", time.time() + 60
    while not (
        log.exists()
        and any(on_worker_node(int(line.split()[1])) for line in log.read_text().splitlines())
    ):
        assert time.time() < deadline and proc.poll() is None, (
            "no evaluation ran on the worker node"
        )
        time.sleep(0.05)
    cluster.remove_node(
        worker, allow_graceful=False
    )  # its raylet and workers die with the evaluation they run
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    rows = _rows(run)
    assert [
        (r[0], r[1], r[2]) for r in rows
    ] == reference  # every episode once, the same blocks, all ok
    con = sqlite3.connect(run / "search.db")
    trained = con.execute("SELECT COUNT(*) FROM episodes WHERE reused = 0").fetchone()[0]
    con.close()
    assert sum(attempts(tmp_path / "attempts").values()) > trained  # the lost evaluation ran again


@pytest.mark.slow
def test_a_master_killed_with_ray_tasks_in_flight_leaves_none_behind(tmp_path, cluster, reference):
    run = tmp_path / "run"
    cmd = _ray_search(run, cluster)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT
    )
    assert _wait_rows(run, 1, proc), "the search did not start"
    deadline = time.time() + 120  # wait for an evaluation in flight (not a fixed sleep: CI is slow)
    while not evaluating():
        assert time.time() < deadline and proc.poll() is None, "no Ray task in flight to kill"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while evaluating() and time.time() < deadline:  # Ray kills the tasks of a dead owner
        time.sleep(0.5)
    assert evaluating() == [], "tasks of the killed master still run on the cluster"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [
        (r[0], r[1], r[2]) for r in _rows(run)
    ] == reference  # every episode once, the same blocks
    assert evaluating() == []
