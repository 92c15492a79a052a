"""Processes that die with their parent: pool workers with their master, torchrun with the
process that launched a DDP candidate, each DDP rank with torchrun. The kernel's parent-death
signal (Linux's PR_SET_PDEATHSIG) delivers SIGKILL when the parent dies however it dies
(SIGKILL included); a watchdog thread covers the other systems. A process whose parent died
before the signal was set has already been re-parented; naming the process that launched its
parent (``owner``) lets it see that and exit."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

import psutil

PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies; False where the
    system has no such signal (not Linux). Safe in a ``preexec_fn`` (a plain system call)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum)) == 0
    except (OSError, AttributeError):
        return False


#: The environment variable through which a DDP launcher names itself to its ranks (the
#: ranks' grandparent: launcher -> torchrun -> rank; see :func:`die_with_parent`).
OWNER_ENV = "BLOCKQNN_DDP_OWNER"


def _tie(parent: int) -> None:
    """Set the parent-death signal, then exit at once if ``parent`` already died (the signal
    only covers deaths after it is set)."""
    parent_death_signal()
    if os.getppid() != parent:
        os._exit(1)


def dies_with(owner: int):
    """A ``preexec_fn``: the child gets the parent-death signal and exits at once if ``owner``
    (its intended parent) died between the fork and this call."""
    return lambda: _tie(owner)


def _child_of(pid: int, owner: int) -> bool:
    try:
        return psutil.Process(pid).ppid() == owner
    except psutil.Error:
        return False


def die_with_parent(
    parent: int | None = None, poll_s: float = 0.5, owner: int | None = None
) -> None:
    """End this process when ``parent`` (default: the current parent) is gone: the parent-death
    signal, and a daemon thread that exits the process once the parent changes.

    ``owner``: the process that launched the parent. A process that reaches this call only
    after its parent died has already been re-parented, and would take its new parent (init, a
    subreaper) for its own; its parent is then no child of ``owner``, and it exits. (A DDP rank
    spends seconds importing before it gets here: a master SIGKILLed in that window left ranks
    training on.)"""
    parent = os.getppid() if parent is None else parent
    _tie(parent)
    if owner is not None and not _child_of(parent, owner):
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
