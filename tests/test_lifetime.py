"""Processes die with whoever owns them: a DDP candidate's torchrun and ranks after a SIGKILL
of the master, and the parent-death helper itself."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import search_argv


def _alive(pids) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _wait_until(what, limit: float):
    """Poll ``what()`` until it is truthy (returns it) or ``limit`` seconds pass (returns the
    last value): an event, not a sleep of a guessed length."""
    deadline = time.monotonic() + limit
    value = what()
    while not value and time.monotonic() < deadline:
        time.sleep(0.1)
        value = what()
    return value


def test_a_grandchild_with_the_parent_death_signal_dies_with_its_parent():
    # parent -> child (parent_death_signal) -> sleeps; SIGKILL the parent: the child must go.
    code = (
        "import subprocess, sys, time\n"
        "from blockqnn.lifetime import parent_death_signal\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], "
        "preexec_fn=parent_death_signal)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive([child])
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert _wait_until(lambda: not _alive([child]), 10), "the child outlived its parent"


@pytest.mark.slow
def test_a_sigkilled_master_leaves_no_ddp_process(tmp_path):
    """The master is SIGKILLed while a candidate trains with DDP on 2 processes (gloo): torchrun
    and both ranks end within seconds (before, they trained on, holding the devices)."""
    master = subprocess.Popen(
        search_argv(
            tmp_path / "run",
            "evaluator.devices=2",
            "recipe.epochs=80",
            "search.max_episodes=1",
            "logger=none",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ranks():
            try:
                kids = psutil.Process(master.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return []
            workers = [p for p in kids if "blockqnn.evaluator.ddp_worker" in _cmdline(p)]
            return kids if len(workers) == 2 else []

        group = _wait_until(ranks, 240)
        assert group, "the DDP candidate's ranks never started"
        pids = [p.pid for p in group]
        os.kill(master.pid, signal.SIGKILL)
        master.wait()
        assert _wait_until(lambda: not _alive(pids), 15), f"still running: {_alive(pids)}"
    finally:
        for pid in _alive([master.pid]):
            os.kill(pid, signal.SIGKILL)
