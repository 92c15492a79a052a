"""Ctrl-C and SIGTERM during a search: raised in the search's thread as
:class:`SearchInterrupted`, turned by the loop into a clean stop (exit 130, or 143 on SIGTERM)."""

from __future__ import annotations

import contextlib
import signal
import threading


class SearchInterrupted(BaseException):
    """Ctrl-C or SIGTERM during a search. A BaseException, not a KeyboardInterrupt: Lightning
    turns a KeyboardInterrupt inside fit() into exit(1), and the evaluator records an Exception
    as a failed candidate; this one must reach the loop untouched."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


class SearchTerminated(SystemExit):
    """The search stopped on SIGTERM (preemption: SLURM, Kubernetes, systemd): exit 143."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def raise_interrupt(signum, frame):
    raise SearchInterrupted(signum)


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM raise SearchInterrupted in the search's (main) thread while it runs."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
