"""Processes die with whoever owns them: a DDP candidate's torchrun and ranks after a SIGKILL
of the master, and the parent-death helper itself."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import MACHINE_WIDE, search_argv

pytestmark = MACHINE_WIDE


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


def test_a_rank_that_starts_after_torchrun_died_exits(tmp_path):
    """launcher -> torchrun-like middle (dies_with) -> rank in its own session, as torchrun
    starts ranks. The launcher is SIGKILLed, the middle dies with it, and only then does the
    rank reach its tie (a gate file: a rank still importing under load). It must exit, not
    take its new parent for torchrun and train on."""
    gate, rank_err = tmp_path / "gate", tmp_path / "rank.err"
    rank = (
        "import pathlib, time\n"
        f"while not pathlib.Path({str(gate)!r}).exists(): time.sleep(0.05)\n"
        "from blockqnn.evaluator.ddp_worker import tie_to_launcher\n"
        "tie_to_launcher()\n"
        "time.sleep(600)\n"
    )
    middle = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {rank!r}], start_new_session=True, "
        f"stderr=open({str(rank_err)!r}, 'w'))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    launcher = (
        "import os, subprocess, sys, time\n"
        "from blockqnn.lifetime import OWNER_ENV, dies_with\n"
        f"p = subprocess.Popen([sys.executable, '-c', {middle!r}], "
        "env={**os.environ, OWNER_ENV: str(os.getpid())}, preexec_fn=dies_with(os.getpid()))\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    mid = int(owner.stdout.readline())
    kid = psutil.Process(mid)
    rank_pid = _wait_until(lambda: [c.pid for c in kid.children()], 60)[0]
    try:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        assert _wait_until(lambda: not _alive([mid]), 10), "torchrun outlived its launcher"
        gate.touch()  # the rank reaches its tie only now, re-parented
        assert _wait_until(lambda: not _alive([rank_pid]), 60), "the rank trained on"
        assert "Traceback" not in rank_err.read_text()  # it exited by the tie, not a crash
    finally:
        for pid in _alive([mid, rank_pid]):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_sigkilled_master_leaves_no_ddp_process(tmp_path):
    """The master is SIGKILLed while a candidate trains with DDP on 2 processes (gloo): torchrun
    and both ranks end within seconds (before, they trained on, holding the devices)."""
    err = tmp_path / "master.err"
    master = subprocess.Popen(
        search_argv(
            tmp_path / "run",
            "evaluator.devices=2",
            "recipe.epochs=80",
            "search.max_episodes=1",
            "logger=none",
        ),
        stdout=subprocess.DEVNULL,
        stderr=err.open("w"),
    )
    try:

        def ranks():
            if master.poll() is not None:  # it ended first: no waiting out the limit
                return "ended"
            try:
                kids = psutil.Process(master.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return []
            # torchrun's own command line names the worker module too: count the ranks only
            # (counting torchrun as well made this wait for a gap between spawns, up to minutes).
            lines = [_cmdline(p) for p in kids]
            launchers = [c for c in lines if "torch.distributed.run" in c]
            ranks = [
                c
                for c in lines
                if "blockqnn.evaluator.ddp_worker" in c and "torch.distributed.run" not in c
            ]
            return kids if len(launchers) == 1 and len(ranks) == 2 else []

        group = _wait_until(ranks, 240)
        why = f"master {'exited ' + str(master.returncode) if group == 'ended' else 'ran on'}"
        assert group and group != "ended", (
            f"the DDP candidate's ranks never started ({why}): {err.read_text()[-3000:]}"
        )
        pids = [p.pid for p in group]
        os.kill(master.pid, signal.SIGKILL)
        master.wait()
        assert _wait_until(lambda: not _alive(pids), 15), f"still running: {_alive(pids)}"
    finally:
        for pid in _alive([master.pid]):
            os.kill(pid, signal.SIGKILL)
