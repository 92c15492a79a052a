"""Executors: where candidate evaluations run.

* ``LocalExecutor`` evaluates in this process, one at a time.
* ``PoolExecutor`` runs local worker processes (spawned, so no CUDA state is inherited), by
  default one per GPU, each bound to its device through CUDA_VISIBLE_DEVICES, or two
  single-threaded CPU workers when there is no GPU. A worker that dies (a segfault, the OOM
  killer) takes its evaluations with it; they are submitted again, up to ``max_retries``.
* ``RayExecutor`` submits each evaluation as a Ray task with its resource request, to a local
  Ray instance (loopback only, no dashboard) or an existing cluster (``address``); Ray retries
  tasks lost with a worker or a node, and results are taken as they finish (``ray.wait``).

All follow :class:`Executor`: built with the evaluator (a spec from
:func:`blockqnn.evaluator.evaluator_spec`, from which each worker builds its own evaluator
once; or, for the local executor, a callable), they offer ``slots``, ``in_flight``,
``submit(tag, nsc)``, ``wait()`` (blocks until at least one evaluation finished and returns
``[(tag, result), ...]``) and ``close()``. An exception raised by an evaluation (a bug, not a
candidate's fault) comes back as a ``failed`` result with its traceback. Unknown arguments are
refused (a typo in ``executor.*`` is an error, not a silent default).
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, Callable, Protocol, runtime_checkable

from blockqnn.errors import ConfigError
from blockqnn.result import empty_result, failure

Evaluator = Callable[[Any], dict]


@runtime_checkable
class Executor(Protocol):
    slots: int

    @property
    def in_flight(self) -> int: ...

    def submit(self, tag: Any, nsc: list) -> None: ...

    def wait(self) -> list[tuple[Any, dict]]: ...

    def close(self) -> None: ...


def _build(evaluator: dict | Evaluator) -> Evaluator:
    if callable(evaluator):
        return evaluator
    from blockqnn.evaluator import make_evaluator

    return make_evaluator(evaluator)


class LocalExecutor:
    """In process, one evaluation at a time (the default)."""

    def __init__(self, evaluator: dict | Evaluator):
        self.evaluate = _build(evaluator)
        self.slots = 1
        self._done: deque = deque()

    def submit(self, tag: Any, nsc: list) -> None:
        try:
            result = self.evaluate(nsc)
        except Exception as exc:  # noqa: BLE001 - a bug: recorded as failed, with its traceback
            result = failure(exc, "the evaluation raised")
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


def _worker_init(env: dict[str, str], threads: int, spec: dict) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the master's to handle
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)
    _WORKER["spec"] = spec


def _pool_evaluate(nsc: list, accelerator: str | None) -> dict:
    """Runs in a pool worker: its one evaluator (built on first use) evaluates ``nsc``."""
    if "evaluator" not in _WORKER:
        spec = _WORKER["spec"]
        if accelerator is not None:
            spec = {**spec, "trainer": {**spec["trainer"], "accelerator": accelerator}}
        _WORKER["evaluator"] = _build(spec)
    return _WORKER["evaluator"](nsc)


def gpu_count() -> int:
    try:
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
        raise ConfigError(f"executor.gpus lists GPU {index}, but CUDA_VISIBLE_DEVICES={','.join(parent)} "
                          f"shows {len(parent)}")
    return parent[index]


class PoolExecutor:
    """Local worker processes, one pool per device."""

    def __init__(self, evaluator: dict, workers_per_gpu: int, cpu_workers: int, gpus: list[int] | None,
                 threads_per_cpu_worker: int, max_retries: int):
        if callable(evaluator):
            raise ConfigError("the pool executor needs an evaluator spec (its workers build their own)")
        self.spec = evaluator
        gpus = list(range(gpu_count())) if gpus is None else list(gpus)
        if workers_per_gpu < 1 or cpu_workers < 1:
            raise ConfigError("executor.workers_per_gpu and executor.cpu_workers must be at least 1")
        if gpus:
            self.devices = [({"CUDA_VISIBLE_DEVICES": visible_device(g)}, int(workers_per_gpu), 2) for g in gpus]
        else:
            self.devices = [({"CUDA_VISIBLE_DEVICES": ""}, int(cpu_workers), int(threads_per_cpu_worker))]
        self.max_retries = int(max_retries)
        self.slots = sum(n for _, n, _ in self.devices)
        self.pools = [self._pool(i) for i in range(len(self.devices))]
        self.futures: dict = {}  # future -> (tag, nsc, device index, tries)
        self._retry: list = []
        self.retries = 0  # evaluations submitted again after their worker died

    def _pool(self, i: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        env, n, threads = self.devices[i]
        return ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                   initargs=(env, threads, self.spec))

    def _load(self, i: int) -> int:
        return sum(1 for v in self.futures.values() if v[3] == i)

    def submit(self, tag: Any, nsc: list, tries: int = 0) -> None:
        i = min(range(len(self.pools)), key=lambda d: self._load(d) / self.devices[d][1])
        # GPU workers see their one device as cuda:0; CPU workers train on the CPU.
        accelerator = None if self.devices[i][0]["CUDA_VISIBLE_DEVICES"] else "cpu"
        self.futures[self.pools[i].submit(_pool_evaluate, nsc, accelerator)] = (tag, nsc, i, tries)

    def wait(self) -> list[tuple[Any, dict]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        if not self.futures:
            return []
        done, _ = wait_futures(list(self.futures), return_when=FIRST_COMPLETED)
        out, broken = [], set()
        for fut in done:
            tag, nsc, i, tries = self.futures.pop(fut)
            try:
                out.append((tag, fut.result()))
            except BrokenProcessPool:
                broken.add(i)
                if tries < self.max_retries:
                    self._retry.append((tag, nsc, tries + 1))
                else:
                    out.append((tag, empty_result("failed", f"the worker process died {tries + 1} times "
                                                            "evaluating this block")))
            except Exception as exc:  # noqa: BLE001 - a bug in the evaluation: failed, with its traceback
                out.append((tag, failure(exc, "the evaluation raised")))
        for i in broken:  # a dead worker breaks its whole pool: start a new one
            self.pools[i].shutdown(wait=False, cancel_futures=True)
            for fut, (tag, nsc, d, tries) in list(self.futures.items()):
                if d == i:
                    self.futures.pop(fut)
                    self._retry.append((tag, nsc, tries))
            self.pools[i] = self._pool(i)
        retry, self._retry = self._retry, []
        for tag, nsc, tries in retry:
            self.retries += 1
            self.submit(tag, nsc, tries)
        return out

    @property
    def in_flight(self) -> int:
        return len(self.futures)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


def _ray_evaluate(nsc: list, spec: dict) -> dict:
    """Runs in a Ray worker process: the process's evaluator for this spec (built once,
    replaced when another search's spec arrives) evaluates ``nsc``."""
    import json

    key = json.dumps(spec, sort_keys=True, default=str)
    if _WORKER.get("ray_key") != key:
        _WORKER.pop("ray_evaluator", None)
        _WORKER["ray_evaluator"], _WORKER["ray_key"] = _build(spec), key
    return _WORKER["ray_evaluator"](nsc)


class RayExecutor:
    """Each evaluation is a Ray task with its resource request."""

    def __init__(self, evaluator: dict, address: str | None, num_cpus: float, num_gpus: float,
                 max_in_flight: int | None, max_retries: int, include_dashboard: bool, local_cpus: int | None):
        if callable(evaluator):
            raise ConfigError("the Ray executor needs an evaluator spec (its workers build their own)")
        if not address:
            # A private local instance listens on the loopback address only: Ray resolves
            # "127.0.0.1" to the machine's address unless it is told this is no cluster
            # (its own switch for laptops; read when ray is imported, so set both).
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray

        if not ray.is_initialized():
            if address:
                ray.init(address=address, include_dashboard=include_dashboard, log_to_driver=False)
            else:
                import ray._private.ray_constants as ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = False
                ray.init(num_cpus=local_cpus, include_dashboard=include_dashboard, log_to_driver=False,
                         configure_logging=False)
        self.ray = ray
        self.num_gpus = float(num_gpus)
        spec = evaluator
        if not self.num_gpus and "trainer" in evaluator:  # CPU tasks train on the CPU
            spec = {**evaluator, "trainer": {**evaluator["trainer"], "accelerator": "cpu"}}
        self.spec_ref = ray.put(spec)
        self.task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                               retry_exceptions=False)(_ray_evaluate)
        total_cpus = ray.cluster_resources().get("CPU", 1)
        total_gpus = ray.cluster_resources().get("GPU", 0)
        fits = int(total_cpus // max(num_cpus, 1e-9))
        if num_gpus:
            fits = min(fits, int(total_gpus // num_gpus))
        if fits < 1:
            raise ConfigError(f"the Ray cluster cannot fit one task of {num_cpus} CPUs and {num_gpus} GPUs")
        self.slots = int(max_in_flight or fits)
        self.refs: dict = {}

    def submit(self, tag: Any, nsc: list) -> None:
        self.refs[self.task.remote(nsc, self.spec_ref)] = tag

    def wait(self) -> list[tuple[Any, dict]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out = []
        for ref in ready:
            tag = self.refs.pop(ref)
            try:
                out.append((tag, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a bug, or a task lost beyond its retries
                out.append((tag, failure(exc, "the Ray task raised")))
        return out

    @property
    def in_flight(self) -> int:
        return len(self.refs)

    def close(self) -> None:
        pass
