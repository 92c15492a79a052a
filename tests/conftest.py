"""Shared fixtures: configs composed by Hydra from conf/ (the files users run), evaluators
built from them, and a fast deterministic stand-in evaluator for the loop's bookkeeping."""

import os
from pathlib import Path

# Under pytest-xdist (pyproject's addopts: two workers) each worker's trainings, in process and
# in the subprocesses it starts, get their share of the cores: two workers whose torch each
# spins a thread per core oversubscribe them (measured: a 12 s module fixture took 70 s when
# both workers ran it). Set before torch is imported; a value the user set is kept.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

import blockqnn  # noqa: E402, F401  registers the config schemas

ROOT = Path(__file__).resolve().parents[1]
#: A search that runs in seconds (conf/debug/smoke.yaml), logging to CSV.
SMOKE = ["debug=smoke"]


@pytest.fixture(autouse=True, scope="session")
def _decoded_image_cache(tmp_path_factory):
    """Image folders the tests' runs decode go to a temporary cache (data.cache_dir, through
    paths.cache_dir's environment variable, which subprocesses inherit), never the user's."""
    os.environ["BLOCKQNN_CACHE_DIR"] = str(tmp_path_factory.mktemp("decoded"))


def compose_search(*overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("search", overrides=list(overrides))


def compose_train(*overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def lightning_evaluator(*overrides: str):
    """The Lightning evaluator a search with these overrides builds."""
    from blockqnn.evaluator import evaluator_spec, make_evaluator

    return make_evaluator(evaluator_spec(compose_search(*overrides)))


class FakeEvaluator:
    """A deterministic stand-in for training: reward grows with the block's length."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, nsc, repeat=0):
        from blockqnn.space.nsc import Block

        b = Block.parse(nsc)
        self.calls.append(b.key)
        return {
            "status": "ok",
            "reward": 0.5 + 0.01 * len(b),
            "accuracy": 0.9,
            "flops": 1000 * len(b),
            "params": 10,
            "density": b.density,
            "epochs": 1,
            "restarts": 0,
            "wall_time": 0.0,
            "error": None,
            "history": [0.9],
        }


@pytest.fixture
def fake_evaluator():
    return FakeEvaluator()


def fingerprint_of(cfg):
    from blockqnn.search.setup import fingerprint

    return fingerprint(cfg)


class BrokenEvaluator:
    """An evaluator with a bug: every call raises (``evaluator._target_=tests.conftest.BrokenEvaluator``)."""

    def __init__(self, run=None, devices: int = 1, timeout_s=None):
        self.run = run

    def __call__(self, nsc):
        return self._inner(nsc)

    def _inner(self, nsc):
        raise ZeroDivisionError("a deliberate bug in the evaluator")


class OOMOnRank:
    """A Lightning callback for tests: raises torch.OutOfMemoryError on one rank at its first
    training batch (``+callbacks.oom._target_=tests.conftest.OOMOnRank +callbacks.oom.rank=1``)."""

    def __new__(cls, rank: int):
        import lightning as L
        import torch

        class _OOM(L.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_rank == rank:
                    raise torch.OutOfMemoryError("injected: CUDA out of memory on this rank")

        return _OOM()


class HoldAtEpoch:
    """A Lightning callback for tests (``+callbacks.hold._target_=tests.conftest.HoldAtEpoch``):
    while the file ``gate`` exists, a training waits at the start of epoch ``epoch`` (0-based),
    so a test can kill it there on any machine (its earlier epochs' checkpoints are written)."""

    def __new__(cls, gate: str, epoch: int):
        import os
        import time

        import lightning as L

        class _Hold(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                while trainer.current_epoch >= epoch and os.path.exists(gate):
                    time.sleep(0.05)

        return _Hold()


class BatchRecorder:
    """A Lightning callback for tests (``+callbacks.record._target_=tests.conftest.BatchRecorder``):
    each process writes its rank, world size and training batch sizes to ``folder/rank<r>.json``."""

    def __new__(cls, folder: str):
        import lightning as L

        class _Recorder(L.Callback):
            def __init__(self):
                self.sizes: list[int] = []

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self.sizes.append(int(batch[0].shape[0]))

            def on_train_end(self, trainer, pl_module):
                import json
                from pathlib import Path

                Path(folder).mkdir(parents=True, exist_ok=True)
                (Path(folder) / f"rank{trainer.global_rank}.json").write_text(
                    json.dumps(
                        {
                            "rank": trainer.global_rank,
                            "world": trainer.world_size,
                            "sizes": self.sizes,
                        }
                    )
                )

        return _Recorder()


def run_entry(entry: str, run_dir, *overrides: str) -> tuple[int, str]:
    """``search.py`` or ``train.py`` with these overrides, in this process (the entry point's
    own error handling, without a subprocess's start-up): (exit code, what it printed on
    stderr). Errors Hydra raises while composing are a subprocess's business (tests use one)."""
    import contextlib
    import io

    from blockqnn import cli

    cfg = (compose_search if entry == "search" else compose_train)(*overrides)
    err = io.StringIO()
    original = cli.run_dir
    cli.run_dir = lambda: Path(run_dir)
    try:
        with contextlib.redirect_stderr(err):
            (cli.run_search if entry == "search" else cli.run_train)(cfg)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        cli.run_dir = original
    return code, err.getvalue()
