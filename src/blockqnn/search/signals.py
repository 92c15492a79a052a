"""Ctrl-C and SIGTERM during a search: raised in the search's thread as
:class:`SearchInterrupted`, turned by the loop into a clean stop (exit 130, or 143 on SIGTERM)."""

from __future__ import annotations

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


class SignalGuard:
    """Ctrl-C and SIGTERM over a search's life, in three phases. ``arm()``: they raise
    :class:`SearchInterrupted` in the search's (main) thread. ``defer()``: they are noted, not
    raised, while the search writes its final outputs and closes its executor, store, logger and
    lock (a scheduler's second SIGTERM must not kill the master mid-close; a fourth Ctrl-C of an
    impatient user neither). ``restore()``: the handlers from before the search. Off the main
    thread (a notebook's worker thread) it does nothing: only the main thread gets signals."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.active = threading.current_thread() is threading.main_thread()
        self.previous = {s: signal.getsignal(s) for s in self.SIGNALS} if self.active else {}
        self.received: list[int] = []

    def _set(self, handler) -> None:
        if self.active:
            for sig in self.SIGNALS:
                signal.signal(sig, handler)

    def arm(self) -> None:
        self._set(raise_interrupt)

    def _note(self, signum, frame) -> None:
        self.received.append(signum)

    def defer(self) -> None:
        self._set(self._note)

    def restore(self) -> None:
        if self.active:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
