"""Processes that die with their parent: pool workers with their master, torchrun with the
process that launched a DDP candidate, each DDP rank with torchrun. The kernel's parent-death
signal (Linux's PR_SET_PDEATHSIG) delivers SIGKILL when the parent dies however it dies
(SIGKILL included); a watchdog thread covers the other systems and a parent that died before
the signal was set."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1


def parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies; False where the
    system has no such signal (not Linux). Safe in a ``preexec_fn`` (a plain system call)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int | None = None, poll_s: float = 0.5) -> None:
    """End this process when ``parent`` (default: the current parent) is gone: the parent-death
    signal, and a daemon thread that exits the process once the parent changes."""
    parent = os.getppid() if parent is None else parent
    parent_death_signal()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(poll_s)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
