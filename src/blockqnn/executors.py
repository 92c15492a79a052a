"""Executors: where candidate evaluations run.

* ``LocalExecutor`` evaluates in this process, one at a time.
* ``PoolExecutor`` runs local worker processes (spawned, so no CUDA state is inherited), by
  default one per GPU, each bound to its device through CUDA_VISIBLE_DEVICES, or two
  single-threaded CPU workers when there is no GPU. Each worker is its own one-process pool,
  so a worker that dies (a segfault, the OOM killer) takes only its own evaluation with it;
  that evaluation is submitted again, up to ``max_retries`` times, then recorded ``failed``.
* ``RayExecutor`` submits each evaluation as a Ray task with its resource request, to a local
  Ray instance (loopback only, no dashboard) or an existing cluster (``address``); Ray retries
  tasks lost with a worker or a node, and results are taken as they finish (``ray.wait``).

Every executor enforces ``evaluator.timeout_s`` itself, as a backstop behind the evaluator's
own time limit (which stops training between batches): an evaluation still running
:func:`hard_limit` seconds after it began is stopped and recorded as ``timeout``. Local:
SIGALRM interrupts it in this process. Pool: its worker process is killed and replaced (the
worker tells the master when it began). Ray: SIGALRM interrupts it in its worker, and a task
still running ``RAY_SLACK_S`` later, counted from when its worker began it (a hang no signal
reaches) is cancelled with
``force=True``, which kills its worker.

All follow :class:`Executor`: built with the evaluator (a spec from
:func:`blockqnn.evaluator.evaluator_spec`, from which each worker builds its own evaluator
once; or, for the local executor, a callable), they offer ``slots``, ``in_flight``,
``submit(tag, nsc)``, ``wait()`` (blocks until at least one evaluation finished and returns
``[(tag, result), ...]``) and ``close()``. An exception raised by an evaluation (a bug, not a
candidate's fault) comes back as a ``failed`` result with its traceback. Unknown arguments are
refused (a typo in ``executor.*`` is an error, not a silent default).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, runtime_checkable

from blockqnn.errors import ConfigError
from blockqnn.evaluator import DDP_DEFAULT_TIMEOUT_S, make_evaluator
from blockqnn.lifetime import die_with_parent
from blockqnn.result import empty_result, failure

Evaluator = Callable[[Any], dict]


@runtime_checkable
class Executor(Protocol):
    slots: int

    @property
    def in_flight(self) -> int: ...

    def submit(self, tag: Any, nsc: list, repeat: int = 0) -> None: ...

    def wait(self) -> list[tuple[Any, dict]]: ...

    def close(self) -> None: ...


def _build(evaluator: dict | Evaluator) -> Evaluator:
    if callable(evaluator):
        return evaluator

    return make_evaluator(evaluator)


def _build_ready(spec: dict) -> Evaluator:
    """A worker's evaluator with its one-off set-up done (data loaded, surrogate fitted), so
    that no evaluation's time limit counts the worker's start-up."""
    evaluator = _build(spec)
    if hasattr(evaluator, "prepare"):
        evaluator.prepare()
    return evaluator


def hard_limit(timeout_s: float | None) -> float | None:
    """Seconds after which an executor stops an evaluation: ``evaluator.timeout_s`` plus a
    grace (10%, at least 2 s, at most 60 s) for the evaluator's own limit to act first."""
    if timeout_s is None:
        return None
    t = float(timeout_s)
    return t + min(60.0, max(2.0, 0.1 * t))


def _timeout_of(evaluator: dict | Evaluator) -> float | None:
    if isinstance(evaluator, dict):
        ev = evaluator.get("evaluator") or {}
        if ev.get("timeout_s") is None and int(ev.get("devices") or 1) > 1:
            return DDP_DEFAULT_TIMEOUT_S
        return ev.get("timeout_s")
    return getattr(evaluator, "timeout_s", None)


def _stopped(timeout_s: float, how: str) -> dict:
    return empty_result(
        "timeout",
        f"the evaluation ran past evaluator.timeout_s={float(timeout_s):g} s "
        f"and was stopped by the executor ({how})",
    )


class _HardTimeout(BaseException):
    """Raised in the evaluating thread by SIGALRM (a BaseException: no handler of the
    evaluation's own swallows it)."""


def _call(evaluate: Evaluator, nsc: list, repeat: int = 0) -> dict:
    """``evaluate(nsc)``, or for a re-evaluation ``evaluate(nsc, repeat=repeat)`` (a fresh
    training seed or noise draw; evaluators that take no ``repeat`` cannot re-evaluate)."""
    return evaluate(nsc) if not repeat else evaluate(nsc, repeat=repeat)


def _evaluate_with_alarm(
    evaluate: Evaluator, nsc: list, timeout_s: float | None, where: str, repeat: int = 0
) -> dict:
    """``evaluate(nsc)`` interrupted by SIGALRM :func:`hard_limit` seconds after it starts: at
    its next Python instruction (a sleep or a lock wait included). Only a main thread gets
    signals; elsewhere the evaluator's own limit is the only one in this process. Nothing is
    left running: the evaluation is this thread."""
    limit = hard_limit(timeout_s)
    alarm = limit is not None and threading.current_thread() is threading.main_thread()
    if not alarm:
        try:
            return _call(evaluate, nsc, repeat)
        except Exception as exc:  # noqa: BLE001 - a bug: recorded as failed, with its traceback
            return failure(exc, "the evaluation raised")

    done = [False]

    def _raise(signum, frame):
        if not done[0]:  # an alarm after the evaluation ended is dropped, never raised
            raise _HardTimeout()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, limit)
    result = None
    try:
        result = _call(evaluate, nsc, repeat)
        done[0] = True
    except _HardTimeout:
        done[0] = True
        if result is None:  # an alarm right after the evaluation returned keeps its result
            result = _stopped(timeout_s, f"interrupted {where}")
    except Exception as exc:  # noqa: BLE001 - a bug: recorded as failed, with its traceback
        done[0] = True
        result = failure(exc, "the evaluation raised")
    finally:
        done[0] = True
        # The timer off, then the handler back; a signal that CPython noted meanwhile reaches
        # _raise (harmless now) or the previous handler's default, which Python never runs.
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return result


class LocalExecutor:
    """In process, one evaluation at a time (the default)."""

    def __init__(self, evaluator: dict | Evaluator):
        self.evaluate = _build(evaluator)
        self.timeout_s = _timeout_of(evaluator)
        self.slots = 1
        self._done: deque = deque()

    def submit(self, tag: Any, nsc: list, repeat: int = 0) -> None:
        result = _evaluate_with_alarm(self.evaluate, nsc, self.timeout_s, "in this process", repeat)
        self._done.append((tag, result))

    def wait(self) -> list[tuple[Any, dict]]:
        out = list(self._done)
        self._done.clear()
        return out

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def close(self) -> None:
        pass


_WORKER: dict[str, Any] = {}  # this worker process's evaluator (pool workers)


def _die_with_parent(parent: int) -> None:
    """End this worker process when its master dies, however it dies (SIGKILL included)."""
    die_with_parent(parent)


def _worker_init(
    env: dict[str, str], threads: int, spec: dict, started=None, parent: int | None = None
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the master's to handle
    if parent is not None:
        _die_with_parent(parent)
    _WORKER["started"] = started  # shared with the master: when the current evaluation began
    os.environ.update(env)
    # lazy: torch stays out of this light module's import (master, CLI start-up)
    import torch

    torch.set_num_threads(threads)
    _WORKER["spec"] = spec


def _pool_evaluate(nsc: list, accelerator: str | None, repeat: int = 0) -> dict:
    """Runs in a pool worker: its one evaluator (built on first use) evaluates ``nsc``."""
    if "evaluator" not in _WORKER:
        spec = _WORKER["spec"]
        if accelerator is not None:
            spec = {**spec, "trainer": {**spec["trainer"], "accelerator": accelerator}}
        _WORKER["evaluator"] = _build_ready(spec)
    if _WORKER.get("started") is not None:  # the master's time limit counts from here
        _WORKER["started"].value = time.time()
    return _call(_WORKER["evaluator"], nsc, repeat)


def gpu_count() -> int:
    try:
        # lazy: torch stays out of this light module's import (master, CLI start-up)
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


def visible_device(index: int) -> str:
    """The CUDA_VISIBLE_DEVICES entry of this process's ``index``-th GPU: mapped through the
    parent's own CUDA_VISIBLE_DEVICES when it is set (a job given GPUs 2,3 runs its worker
    for GPU 0 on device 2), else the index itself."""
    parent = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if not parent:
        return str(index)
    if not 0 <= index < len(parent):
        raise ConfigError(
            f"executor.gpus lists GPU {index}, but CUDA_VISIBLE_DEVICES={','.join(parent)} "
            f"shows {len(parent)}"
        )
    return parent[index]


class PoolExecutor:
    """Local worker processes: one single-process pool per worker slot, so killing or losing a
    worker touches its own evaluation only."""

    def __init__(
        self,
        evaluator: dict,
        workers_per_gpu: int,
        cpu_workers: int,
        gpus: list[int] | None,
        threads_per_cpu_worker: int,
        max_retries: int,
    ):
        if callable(evaluator):
            raise ConfigError(
                "the pool executor needs an evaluator spec (its workers build their own)"
            )
        self.spec = evaluator
        self.timeout_s = _timeout_of(evaluator)
        self.hard = hard_limit(self.timeout_s)
        gpus = list(range(gpu_count())) if gpus is None else list(gpus)
        if workers_per_gpu < 1 or cpu_workers < 1:
            raise ConfigError(
                "executor.workers_per_gpu and executor.cpu_workers must be at least 1"
            )
        if gpus:
            devices = [
                ({"CUDA_VISIBLE_DEVICES": visible_device(g)}, int(workers_per_gpu), 2) for g in gpus
            ]
        else:
            devices = [
                ({"CUDA_VISIBLE_DEVICES": ""}, int(cpu_workers), int(threads_per_cpu_worker))
            ]
        # One slot per worker: (environment, threads).
        self.workers = [(env, threads) for env, n, threads in devices for _ in range(n)]
        self.max_retries = int(max_retries)
        self.slots = len(self.workers)
        self.started: list = [
            None
        ] * self.slots  # per slot: shared time its evaluation began (0: not yet)
        self.pools = [self._pool(i) for i in range(self.slots)]
        self.futures: dict = {}  # future -> (tag, nsc, slot, tries)
        self._killed: set = set()  # futures whose worker was killed for running past the limit
        self.retries = 0  # evaluations submitted again after their worker died
        self.replaced = 0  # workers started again after one died or was killed

    def _pool(self, i: int):
        env, threads = self.workers[i]
        ctx = mp.get_context("spawn")
        self.started[i] = ctx.Value("d", 0.0, lock=False)
        return ProcessPoolExecutor(
            1,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(env, threads, self.spec, self.started[i], os.getpid()),
        )

    def _replace(self, i: int) -> None:
        """A new worker in slot ``i`` (its worker died or was killed), started only once the old
        one has exited: a killed worker still tearing down would hold its memory and its GPU
        while the replacement starts on them."""
        _reap(self._kill(i))
        self.pools[i].shutdown(wait=False, cancel_futures=True)
        self.pools[i] = self._pool(i)
        self.replaced += 1

    def submit(self, tag: Any, nsc: list, repeat: int = 0, tries: int = 0) -> None:
        busy = {v[2] for v in self.futures.values()}
        free = [i for i in range(self.slots) if i not in busy]
        i = (
            free[0]
            if free
            else min(range(self.slots), key=lambda d: sum(v[2] == d for v in self.futures.values()))
        )
        # GPU workers see their one device as cuda:0; CPU workers train on the CPU.
        accelerator = None if self.workers[i][0]["CUDA_VISIBLE_DEVICES"] else "cpu"
        self.started[i].value = 0.0
        try:
            fut = self.pools[i].submit(_pool_evaluate, nsc, accelerator, repeat)
        except (
            BrokenProcessPool,
            RuntimeError,
        ):  # its worker died after its last result: replace it
            self._replace(i)
            self.started[i].value = 0.0
            fut = self.pools[i].submit(_pool_evaluate, nsc, accelerator, repeat)
        self.futures[fut] = (tag, nsc, i, tries, repeat)

    def _kill(self, i: int) -> list:
        """SIGKILL the slot's worker; returns its process (to :func:`_reap`)."""
        procs = list((getattr(self.pools[i], "_processes", None) or {}).values())
        for proc in procs:
            try:
                proc.kill()
            except (OSError, ValueError):
                pass
        return procs

    def _wait(self):
        """Futures done, after killing the workers of evaluations past the hard limit (counted
        from when the worker began the evaluation, so a cold worker's start-up is not)."""

        while True:
            timeout = None
            if self.hard is not None:
                now = time.time()
                live = [v[2] for f, v in self.futures.items() if f not in self._killed]
                begun = [self.started[i].value for i in live if self.started[i].value > 0]
                waits = [max(0.0, b + self.hard - now) for b in begun]
                if len(begun) < len(live):
                    waits.append(0.5)  # look again for evaluations that begin
                timeout = min(waits) if waits else None
            done, _ = wait_futures(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
            if done:
                return done
            now = time.time()
            for fut, (_, _, i, _, _) in self.futures.items():
                began = self.started[i].value
                if fut not in self._killed and began > 0 and now >= began + self.hard:
                    self._killed.add(fut)
                    self._kill(i)

    def wait(self) -> list[tuple[Any, dict]]:
        if not self.futures:
            return []
        out, retry = [], []
        for fut in self._wait():
            tag, nsc, i, tries, repeat = self.futures.pop(fut)
            killed = fut in self._killed
            self._killed.discard(fut)
            try:
                out.append((tag, fut.result()))
                continue
            except BrokenProcessPool:
                if killed:
                    out.append(
                        (
                            tag,
                            _stopped(self.timeout_s, "its worker process was killed and replaced"),
                        )
                    )
                elif tries < self.max_retries:
                    retry.append((tag, nsc, repeat, tries + 1))
                else:
                    out.append(
                        (
                            tag,
                            empty_result(
                                "failed",
                                f"the worker process died {tries + 1} times evaluating this block",
                            ),
                        )
                    )
            except Exception as exc:  # noqa: BLE001 - a bug in the evaluation: failed, with its traceback
                out.append((tag, failure(exc, "the evaluation raised")))
                continue
            # The slot's worker is gone: a new one takes its place.
            self._replace(i)
        for tag, nsc, repeat, tries in retry:
            self.retries += 1
            self.submit(tag, nsc, repeat, tries)
        return out

    @property
    def in_flight(self) -> int:
        return len(self.futures)

    def close(self) -> None:
        """Stop every worker (evaluating or idle) and wait for them to exit: nothing of the
        pool outlives the search. Safe to call twice."""
        procs = []
        for i, pool in enumerate(self.pools):
            # a worker still evaluating (perhaps hung) must not outlive the search
            procs += self._kill(i)
            pool.shutdown(wait=False, cancel_futures=True)
        _reap(procs)
        self.futures.clear()


def _reap(procs: list, timeout_s: float = 5.0) -> None:
    """Wait (bounded) for killed worker processes to exit and be reaped. A SIGKILLed process
    still frees its memory after its pipes close, which is when the pool sees it gone."""
    for proc in procs:
        try:
            proc.join(timeout=timeout_s)
        except (OSError, ValueError, AssertionError):
            pass


RAY_SLACK_S = 30.0  # see RayExecutor._ready


class _StartBoard:
    """A small Ray actor: when each evaluation began in its worker (after the worker's set-up),
    so the master's backstop counts from there, as the pool's does."""

    def __init__(self):
        self.began: dict[int, float] = {}

    def begin(self, token: int, at: float) -> None:
        self.began[token] = at

    def begun(self, tokens: list[int]) -> dict[int, float]:
        return {t: self.began[t] for t in tokens if t in self.began}


def _ray_evaluate(
    nsc: list, spec: dict, repeat: int = 0, board=None, token: int | None = None
) -> dict:
    """Runs in a Ray worker process: the process's evaluator for this spec (built once,
    replaced when another search's spec arrives) evaluates ``nsc``; the start board hears when
    the evaluation itself began."""

    key = json.dumps(spec, sort_keys=True, default=str)
    if _WORKER.get("ray_key") != key:
        _WORKER.pop("ray_evaluator", None)
        _WORKER["ray_evaluator"], _WORKER["ray_key"] = _build_ready(spec), key
    if board is not None:
        board.begin.remote(token, time.time())
    return _evaluate_with_alarm(
        _WORKER["ray_evaluator"], nsc, _timeout_of(spec), "in its Ray worker", repeat
    )


class RayExecutor:
    """Each evaluation is a Ray task with its resource request."""

    def __init__(
        self,
        evaluator: dict,
        address: str | None,
        num_cpus: float,
        num_gpus: float,
        max_in_flight: int | None,
        max_retries: int,
        include_dashboard: bool,
        local_cpus: int | None,
    ):
        if callable(evaluator):
            raise ConfigError(
                "the Ray executor needs an evaluator spec (its workers build their own)"
            )
        if not address:
            # A private local instance listens on the loopback address only: Ray resolves
            # "127.0.0.1" to the machine's address unless it is told this is no cluster
            # (its own switch for laptops; read when ray is imported, so set both).
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        # lazy: Ray takes seconds to import; only executor=ray needs it
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=include_dashboard, log_to_driver=False)
            else:
                # lazy: Ray takes seconds to import; only executor=ray needs it
                import ray._private.ray_constants as ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = False
                # address="local": always a private instance, never a cluster some other job
                # on this machine started (ray.init() alone would attach to it).
                ray.init(
                    address="local",
                    num_cpus=local_cpus,
                    include_dashboard=include_dashboard,
                    log_to_driver=False,
                    configure_logging=False,
                )
        self.ray = ray
        self.timeout_s = _timeout_of(evaluator)
        self.hard = hard_limit(self.timeout_s)
        self.num_gpus = float(num_gpus)
        spec = evaluator
        if not self.num_gpus and "trainer" in evaluator:  # CPU tasks train on the CPU
            spec = {**evaluator, "trainer": {**evaluator["trainer"], "accelerator": "cpu"}}
        self.spec_ref = ray.put(spec)
        self.task = ray.remote(
            num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries, retry_exceptions=False
        )(_ray_evaluate)
        total_cpus = ray.cluster_resources().get("CPU", 1)
        total_gpus = ray.cluster_resources().get("GPU", 0)
        fits = int(total_cpus // max(num_cpus, 1e-9))
        if num_gpus:
            fits = min(fits, int(total_gpus // num_gpus))
        if fits < 1:
            raise ConfigError(
                f"the Ray cluster cannot fit one task of {num_cpus} CPUs and {num_gpus} GPUs"
            )
        self.slots = int(max_in_flight or fits)
        self.refs: dict = {}  # ref -> (tag, token)
        self._tokens = 0
        self.board = ray.remote(num_cpus=0)(_StartBoard).remote() if self.hard is not None else None
        self._killed: set = set()  # refs cancelled for running past the hard limit

    def submit(self, tag: Any, nsc: list, repeat: int = 0) -> None:
        self._tokens += 1
        ref = self.task.remote(nsc, self.spec_ref, repeat, self.board, self._tokens)
        self.refs[ref] = (tag, self._tokens)

    def _ready(self) -> list:
        """Refs finished, after force-cancelling the tasks still running ``RAY_SLACK_S`` past
        the hard limit counted from when their worker began the evaluation (the start board:
        a worker's set-up and a wait for resources do not count; the task interrupts itself at
        the hard limit; this backstop is for a hang that no signal reaches)."""
        while True:
            timeout = None
            live = {r: tok for r, (_, tok) in self.refs.items() if r not in self._killed}
            if self.hard is not None and live:
                began = self.ray.get(self.board.begun.remote(list(live.values())))
                now = time.time()
                for ref, tok in live.items():
                    if tok in began and now >= began[tok] + self.hard + RAY_SLACK_S:
                        self._killed.add(ref)
                        self.ray.cancel(ref, force=True)
                waits = [
                    began[t] + self.hard + RAY_SLACK_S - now for t in live.values() if t in began
                ]
                timeout = max(0.1, min(waits + ([1.0] if len(waits) < len(live) else [])))
            ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
            if ready:
                return ready

    def wait(self) -> list[tuple[Any, dict]]:
        if not self.refs:
            return []
        out = []
        for ref in self._ready():
            tag, _ = self.refs.pop(ref)
            killed = ref in self._killed
            self._killed.discard(ref)
            try:
                out.append((tag, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - cancelled, a bug, or a task lost beyond its retries
                out.append(
                    (
                        tag,
                        _stopped(self.timeout_s, "its Ray task was cancelled with force=True")
                        if killed
                        else failure(exc, "the Ray task raised"),
                    )
                )
        return out

    @property
    def in_flight(self) -> int:
        return len(self.refs)

    def close(self) -> None:
        """Cancel the tasks still in flight (an interrupted search leaves nothing running on the
        cluster; a resumed one submits them again)."""
        for ref in self.refs:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or lost
                pass
        self.refs.clear()
