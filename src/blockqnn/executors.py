"""Executors: where candidate evaluations run.

* ``LocalExecutor`` evaluates in this process, one at a time.
* ``PoolExecutor`` runs local worker processes (spawned, so no CUDA state is inherited), by
  default one per GPU, each bound to its device through CUDA_VISIBLE_DEVICES, or two
  single-threaded CPU workers when there is no GPU. A worker that dies (a segfault, the OOM
  killer) takes its evaluations with it; they are submitted again, up to ``max_retries``.
* ``RayExecutor`` submits each evaluation as a Ray task with its resource request, to a local
  Ray instance (loopback only, no dashboard) or an existing cluster (``address``); Ray retries
  tasks lost with a worker or a node, and results are taken as they finish (``ray.wait``).

All share one interface: ``slots`` (how many evaluations can run at once), ``submit(tag, nsc,
cfg)``, and ``wait()`` which blocks until at least one evaluation finished and returns
``[(tag, result), ...]`` in completion order.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from blockqnn.errors import ConfigError


class LocalExecutor:
    """In process, one evaluation at a time (the default)."""

    def __init__(self, evaluate=None, **_: Any):
        from blockqnn.evaluator import evaluate as default

        self.evaluate = evaluate or default
        self.slots = 1
        self._done: deque = deque()

    def submit(self, tag: Any, nsc: list, cfg: dict) -> None:
        self._done.append((tag, self.evaluate(nsc, cfg)))

    def wait(self) -> list[tuple[Any, dict]]:
        out = list(self._done)
        self._done.clear()
        return out

    @property
    def in_flight(self) -> int:
        return len(self._done)

    def close(self) -> None:
        pass


def _worker_init(env: dict[str, str], threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the master's to handle
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)


def _failed(message: str) -> dict:
    from blockqnn.evaluator.proxy import empty_result

    return empty_result("failed", message)


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


class PoolExecutor:
    """Local worker processes, one pool per device."""

    def __init__(self, workers_per_gpu: int = 1, cpu_workers: int = 2, gpus: list[int] | None = None,
                 threads_per_cpu_worker: int = 1, max_retries: int = 2, **_: Any):
        gpus = list(range(gpu_count())) if gpus is None else list(gpus)
        if workers_per_gpu < 1 or cpu_workers < 1:
            raise ConfigError("executor.workers_per_gpu and executor.cpu_workers must be at least 1")
        if gpus:
            self.devices = [({"CUDA_VISIBLE_DEVICES": str(g)}, int(workers_per_gpu), 2) for g in gpus]
        else:
            self.devices = [({"CUDA_VISIBLE_DEVICES": ""}, int(cpu_workers), int(threads_per_cpu_worker))]
        self.max_retries = int(max_retries)
        self.slots = sum(n for _, n, _ in self.devices)
        self.pools = [self._pool(i) for i in range(len(self.devices))]
        self.futures: dict = {}  # future -> (tag, nsc, cfg, device index, tries)
        self._retry: list = []

    def _pool(self, i: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        env, n, threads = self.devices[i]
        return ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                   initargs=(env, threads))

    def _load(self, i: int) -> int:
        return sum(1 for v in self.futures.values() if v[3] == i)

    def submit(self, tag: Any, nsc: list, cfg: dict, tries: int = 0) -> None:
        from blockqnn.evaluator import evaluate

        i = min(range(len(self.pools)), key=lambda d: self._load(d) / self.devices[d][1])
        # GPU workers see their one device as cuda:0; CPU workers train on the CPU.
        if not self.devices[i][0]["CUDA_VISIBLE_DEVICES"]:
            cfg = {**cfg, "trainer": {**cfg["trainer"], "accelerator": "cpu"}}
        self.futures[self.pools[i].submit(evaluate, nsc, cfg)] = (tag, nsc, cfg, i, tries)

    def wait(self) -> list[tuple[Any, dict]]:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        if not self.futures:
            return []
        done, _ = wait_futures(list(self.futures), return_when=FIRST_COMPLETED)
        out, broken = [], set()
        for fut in done:
            tag, nsc, cfg, i, tries = self.futures.pop(fut)
            try:
                out.append((tag, fut.result()))
            except BrokenProcessPool:
                broken.add(i)
                if tries < self.max_retries:
                    self._retry.append((tag, nsc, cfg, tries + 1))
                else:
                    out.append((tag, _failed(f"the worker process died {tries + 1} times evaluating this block")))
            except Exception as exc:  # noqa: BLE001
                out.append((tag, _failed(f"{type(exc).__name__}: {exc}")))
        for i in broken:  # a dead worker breaks its whole pool: start a new one
            self.pools[i].shutdown(wait=False, cancel_futures=True)
            for fut, (tag, nsc, cfg, d, tries) in list(self.futures.items()):
                if d == i:
                    self.futures.pop(fut)
                    self._retry.append((tag, nsc, cfg, tries))
            self.pools[i] = self._pool(i)
        retry, self._retry = self._retry, []
        for tag, nsc, cfg, tries in retry:
            self.submit(tag, nsc, cfg, tries)
        return out

    @property
    def in_flight(self) -> int:
        return len(self.futures)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Each evaluation is a Ray task with its resource request."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_in_flight: int | None = None, max_retries: int = 3, include_dashboard: bool = False,
                 local_cpus: int | None = None, **_: Any):
        if not address:
            # A private local instance listens on the loopback address only: Ray resolves
            # "127.0.0.1" to the machine's address unless it is told this is no cluster
            # (its own switch for laptops; read when ray is imported, so set both).
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray

        from blockqnn.evaluator import evaluate

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
        self.task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries,
                               retry_exceptions=False)(evaluate)
        total_cpus = ray.cluster_resources().get("CPU", 1)
        total_gpus = ray.cluster_resources().get("GPU", 0)
        fits = int(total_cpus // max(num_cpus, 1e-9))
        if num_gpus:
            fits = min(fits, int(total_gpus // num_gpus))
        if fits < 1:
            raise ConfigError(f"the Ray cluster cannot fit one task of {num_cpus} CPUs and {num_gpus} GPUs")
        self.slots = int(max_in_flight or fits)
        self.refs: dict = {}

    def submit(self, tag: Any, nsc: list, cfg: dict) -> None:
        if not self.num_gpus:
            cfg = {**cfg, "trainer": {**cfg["trainer"], "accelerator": "cpu"}}
        self.refs[self.task.remote(nsc, cfg)] = tag

    def wait(self) -> list[tuple[Any, dict]]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out = []
        for ref in ready:
            tag = self.refs.pop(ref)
            try:
                out.append((tag, self.ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a task lost beyond its retries
                out.append((tag, _failed(f"{type(exc).__name__}: {exc}")))
        return out

    @property
    def in_flight(self) -> int:
        return len(self.refs)

    def close(self) -> None:
        pass
