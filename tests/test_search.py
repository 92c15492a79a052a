"""search.py end to end: store, dedupe, resume after SIGKILL, bad input, multirun, loggers."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blockqnn.search.loop import Search
from blockqnn.search.store import SearchStore, StoreError, parts_of
from tests.conftest import (
    ROOT,
    SMOKE,
    FakeEvaluator,
    compose_search,
    fingerprint_of,
    run_entry,
)
from tests.faults import killed_search
from tests.helpers import MACHINE_WIDE

QUICK = SMOKE
cfg_for = compose_search
_fp = fingerprint_of


def test_loop_records_every_episode_once_and_dedupes(tmp_path):
    fake_evaluate = FakeEvaluator()
    cfg = cfg_for(*QUICK, "space.max_layers=1", "agent.epsilon_schedule=[[1.0,5]]")
    Search(cfg, tmp_path, evaluator=fake_evaluate).run()
    rows = SearchStore(tmp_path / "search.db", _fp(cfg)).episodes()
    assert [r["id"] for r in rows] == list(range(20))
    assert all(r["status"] == "ok" for r in rows)
    keys = [r["key"] for r in rows]
    # Only 8 distinct one-layer blocks exist: each is trained once, the rest reuse the result.
    assert len(fake_evaluate.calls) == len(set(keys)) <= 8
    assert sum(r["reused"] for r in rows) == 20 - len(set(keys))
    for name in ("best_block.json", "best_block.png", "topk.json", "rewards.png", "episodes.csv"):
        assert (tmp_path / name).exists(), name
    best = json.loads((tmp_path / "best_block.json").read_text())
    assert best["reward"] == max(r["reward"] for r in rows)


def test_store_from_before_a_result_column_gains_it_and_keeps_its_rows(tmp_path):
    """A search folder written before results had cost, widths and train_loss opens, gains the
    columns, keeps its rows, and stores the new fields from then on."""
    from blockqnn.result import empty_result

    cfg = cfg_for(*QUICK)
    store = SearchStore(tmp_path / "search.db", _fp(cfg))
    store.begin(0, 0, 1.0, "[[1,1,3,0,0],[2,7,0,0,0]]", "a")
    store.finish(0, empty_result("ok", reward=0.5, accuracy=0.5))
    store.commit(({"iteration": 1}, {}))
    store.close()
    con = sqlite3.connect(tmp_path / "search.db")
    for table in ("episodes", "reevaluations"):
        for column in ("cost", "widths", "train_loss"):
            con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    con.commit()
    con.close()
    store = SearchStore(tmp_path / "search.db", _fp(cfg))
    assert store.lookup("a")["reward"] == 0.5 and store.lookup("a")["train_loss"] is None
    store.begin(1, 1, 1.0, "[[1,1,5,0,0],[2,7,0,0,0]]", "b")
    store.finish(1, empty_result("ok", reward=0.6, accuracy=0.6, train_loss=[1.5, 0.9]))
    store.commit(({"iteration": 2}, {}))
    assert store.lookup("b")["train_loss"] == [1.5, 0.9]
    store.close()


def test_store_refuses_foreign_corrupt_and_incompatible(tmp_path):
    cfg = cfg_for(*QUICK)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = sqlite3.connect(foreign / "search.db")
    con.execute("CREATE TABLE things (a)")
    con.commit()
    con.close()
    before = (foreign / "search.db").read_bytes()
    with pytest.raises(StoreError, match="not a blockqnn search database"):
        SearchStore(foreign / "search.db", _fp(cfg))
    assert (foreign / "search.db").read_bytes() == before
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "search.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable search database"):
        SearchStore(corrupt / "search.db", _fp(cfg))
    assert (corrupt / "search.db").read_bytes() == b"this is not sqlite" * 100
    ok = tmp_path / "ok"
    ok.mkdir()
    SearchStore(ok / "search.db", _fp(cfg)).close()
    with pytest.raises(StoreError, match="seed"):
        SearchStore(ok / "search.db", _fp(cfg_for(*QUICK, "seed=5")))


def _blocks(run_dir, cfg):
    return [(r["id"], r["nsc"]) for r in SearchStore(run_dir / "search.db", _fp(cfg)).episodes()]


def _as_schema_2(db_path, cfg):
    """Rewrite a store as the schema-2 layout: the agent's whole state in one JSON row, no parts."""
    from blockqnn.search.setup import build_agent

    store = SearchStore(db_path, _fp(cfg))
    small, parts = store.agent_state()
    store.close()
    agent = build_agent(cfg)
    agent.restore(small["agent"], parts_of(parts, "agent"))
    con = sqlite3.connect(db_path)
    con.execute("DROP TABLE agent_parts")
    con.execute(
        "UPDATE agent SET state = ?",
        (json.dumps({"agent": agent.state_dict(), "predictor": None}),),
    )
    con.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    con.commit()
    con.close()


@pytest.mark.parametrize("legacy", [False, True])
def test_resume_from_incremental_and_schema_2_stores(tmp_path, legacy):
    fake_evaluate = FakeEvaluator()
    cfg = cfg_for(*QUICK)
    Search(cfg, tmp_path / "whole", evaluator=fake_evaluate).run()
    part = tmp_path / "part"
    Search(
        cfg_for(*QUICK, "search.max_episodes=8"), part, evaluator=fake_evaluate
    ).run()  # 2 iterations of 4
    assert len(_blocks(part, cfg)) == 8
    if legacy:
        _as_schema_2(part / "search.db", cfg)
    Search(cfg, part, evaluator=fake_evaluate).run()
    assert _blocks(part, cfg) == _blocks(tmp_path / "whole", cfg)  # the same 12 blocks as one run
    con = sqlite3.connect(part / "search.db")
    assert con.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == ("3",)
    # The Q table and replay memory live in agent_parts, the agent row stays small.
    assert con.execute(
        "SELECT count(*) FROM agent_parts WHERE part = 'agent.memory'"
    ).fetchone() == (12,)
    assert len(con.execute("SELECT state FROM agent").fetchone()[0]) < 10_000
    con.close()


class _CommittedBeforeEachTraining(FakeEvaluator):
    """Counts, at each training, the trained episodes another connection can read: what a
    SIGKILL at that moment would keep."""

    def __init__(self, db, wall_time):
        super().__init__()
        self.db, self.wall_time, self.seen = db, wall_time, []

    def __call__(self, nsc):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        self.seen.append(
            con.execute(
                "SELECT count(*) FROM episodes WHERE status != 'running' AND reused = 0"
            ).fetchone()[0]
        )
        con.close()
        return {**super().__call__(nsc), "wall_time": self.wall_time}


def test_trainings_are_committed_before_the_next_starts_and_instant_results_grouped(tmp_path):
    cfg = cfg_for(*QUICK)
    slow = _CommittedBeforeEachTraining(tmp_path / "slow" / "search.db", wall_time=30.0)
    Search(cfg, tmp_path / "slow", evaluator=slow).run()
    assert len(slow.seen) >= 5 and slow.seen == list(
        range(len(slow.seen))
    )  # nothing a kill could lose
    # Instant evaluations are committed in groups (up to a second of them), not one by one.
    fast = _CommittedBeforeEachTraining(tmp_path / "fast" / "search.db", wall_time=0.0)
    Search(cfg, tmp_path / "fast", evaluator=fast).run()
    assert fast.seen[-1] < len(fast.seen) - 1
    assert _blocks(tmp_path / "fast", cfg) == _blocks(tmp_path / "slow", cfg)


def test_resume_after_sigkill_of_an_instant_search_with_group_commits(tmp_path):
    """The surrogate makes evaluations instant, so each commit holds many episodes: killed at
    any point, the rerun records every episode once and samples the undisturbed search's blocks."""
    extra = [
        "evaluator=surrogate",
        "logger=none",
        "space.max_layers=10",
        "agent.batch_size=16",
        "agent.epsilon_schedule=[[1.0,20],[0.5,20],[0.1,20]]",
    ]
    ref = tmp_path / "ref"
    Search(cfg_for(*QUICK, *extra), ref).run()  # the undisturbed search, in this process
    reference = episodes_of(ref)
    assert len(reference) == 960
    run = tmp_path / "killed"
    killed_at = []
    # Each killed process records kill_after results, commits every 37 (not once a second: a
    # fast machine runs this whole search inside one second) and dies mid-group.
    for kill_after in (200, 400):
        proc = killed_search(kill_after, search_cmd(run, *extra)[2:], commit_every=37)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        done_rows = [r for r in episodes_of(run) if r[2] != "running"]
        killed_at.append(len(done_rows))
    # Commits of at least 37 results each (a reused block's result waits behind the trainings
    # before it and is recorded in the same burst, with no commit check between, so a group can
    # hold a few more): the kill
    # keeps the last commit's results and loses the rest of the 200; then the second process's
    # commits, less its last results (a resumed search also commits as it starts)
    assert 200 - 2 * 37 < killed_at[0] < 200
    assert killed_at[0] < killed_at[1] < killed_at[0] + 400
    done = subprocess.run(search_cmd(run, *extra), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = episodes_of(run)
    assert [r[0] for r in resumed] == list(range(960)) and all(r[2] != "running" for r in resumed)
    assert [r[1] for r in resumed] == [r[1] for r in reference]
    assert [r[3] for r in resumed] == pytest.approx([r[3] for r in reference])


def search_cmd(run_dir, *extra):
    return [sys.executable, str(ROOT / "search.py"), *QUICK, f"hydra.run.dir={run_dir}", *extra]


def episodes_of(run_dir):
    con = sqlite3.connect(Path(run_dir) / "search.db")
    rows = con.execute("SELECT id, nsc, status, reward FROM episodes ORDER BY id").fetchall()
    con.close()
    return rows


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The episodes of an uninterrupted QUICK search with the local executor."""
    ref = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run(search_cmd(ref), check=True, capture_output=True, timeout=600)
    rows = episodes_of(ref)
    assert len(rows) == 12 and all(r[2] == "ok" for r in rows)
    return rows


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, local_reference):
    env = dict(os.environ)
    reference = local_reference

    run = tmp_path / "killed"
    for kill_after in (2, 7):  # kill once enough episodes were recorded, at two points
        proc = subprocess.Popen(
            search_cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            db = run / "search.db"
            if db.exists():
                try:
                    if len(episodes_of(run)) >= kill_after:
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(search_cmd(run), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr
    resumed = episodes_of(run)
    assert [r[0] for r in resumed] == list(range(12))  # every planned episode exactly once
    assert all(r[2] != "running" for r in resumed)
    assert [r[1] for r in resumed] == [r[1] for r in reference]  # the same blocks sampled
    assert [r[3] for r in resumed] == pytest.approx([r[3] for r in reference])


@pytest.mark.parametrize(
    "override,message",
    [
        ("agent.epsilon_schedule=fastest", "valid names: paper"),
        ("agent.epsilon_schedule=[[2.0,3]]", "outside [0, 1]"),
        ("data=fashion_mnist data.root=/nonexistent/folder", "data.root=/nonexistent/folder"),
        ("executor._target_=blockqnn.executors.ClusterExecutor", "cannot be imported"),
        ("agent.params._target_=blockqnn.agent.GeneticAgent", "cannot build the agent"),
        ("agent.batch_size=0", "agent.batch_size=0"),
        ("trainer=ddp", "use evaluator.devices"),
        ("data=cifar100", "data.root is required"),
        ("recipe.epochs=-1", "recipe.epochs=-1 must be >= 1"),
        ("reward.signal=loss", "reward.signal='loss': one of accuracy, tse"),
        ("evaluator=surrogate reward.signal=tse", "reward.signal=tse reads the training losses"),
        ("+executor.cpu_worker=3", "executor.cpu_worker is not an argument"),
        ("+trainer.max_epochs=3", "trainer.max_epochs is set by the search"),
        pytest.param(
            "trainer=gpu",
            "no GPU is visible",
            marks=pytest.mark.skipif(
                __import__("torch").cuda.is_available(), reason="a GPU is here"
            ),
        ),
    ],
)
def test_bad_input_is_refused_before_training(tmp_path, override, message):
    """search.py's own checks, run in this process (its exit and message are the point)."""
    run = tmp_path / "run"
    code, err = run_entry("search", run, *QUICK, *override.split())
    assert code == 2 and message in err and "Traceback" not in err
    assert not (run / "search.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,message",
    [
        ("seed=notanumber", "full_key: seed"),
        ("space.max_layers=abc", "full_key: space.max_layers"),
        ("search.async=true", "use search.asynchronous"),
        ("executor.cpu_worker=3", "executor.cpu_worker"),
        ("recipe.optim.lr=0.1", "use model/optimizer"),
    ],
)
def test_bad_input_hydra_refuses_while_composing(tmp_path, override, message):
    """Input Hydra itself refuses (types, unknown keys): what search.py prints, in a subprocess."""
    run = tmp_path / "run"
    out = subprocess.run(
        search_cmd(run, *override.split()), capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run / "search.db").exists()


@pytest.mark.slow
def test_unknown_config_group_value_fails_cleanly(tmp_path):
    out = subprocess.run(
        search_cmd(tmp_path / "r", "data=imagenet22k"), capture_output=True, text=True, timeout=300
    )
    assert out.returncode != 0 and "imagenet22k" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_incompatible_resume_is_refused_and_nothing_overwritten(tmp_path):
    run = tmp_path / "run"
    assert run_entry("search", run, *QUICK, "search.max_episodes=2")[0] == 0
    before = episodes_of(run)
    code, err = run_entry("search", run, *QUICK, "search.max_episodes=2", "seed=3")
    assert code == 2 and "another config" in err and "seed" in err
    assert episodes_of(run) == before


@pytest.mark.slow
# Hydra's joblib launcher (jobs in parallel); the basic launcher's sweeps run in test_compare's
# and test_wandb_report's fixtures (on the surrogate).
@pytest.mark.parametrize("launcher", ["local_parallel"])
def test_two_job_multirun(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)  # no W&B login: offline
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            "-m",
            *QUICK,
            "search.max_episodes=2",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
            f"hydra/launcher={launcher}",
            "logger=wandb",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for job in ("0", "1"):
        assert len(episodes_of(sweep / job)) == 2
        assert (sweep / job / "best_block.json").exists()
        # The sweep's runs share a W&B group: the sweep folder's name.
        files = list((sweep / job / "wandb").glob("offline-run-*/*.wandb"))
        run_rec = next(
            r.run for r in _read_wandb_records(files[0]) if r.WhichOneof("record_type") == "run"
        )
        assert run_rec.run_group == "sweep" and run_rec.job_type == "qlearning"


#: W&B's record of a search does not depend on how its blocks were trained: the surrogate
#: spares these subprocesses Lightning's import and the trainings.
SURROGATE = ["evaluator=surrogate"]


@pytest.mark.slow
def test_wandb_offline_run_holds_every_episode(tmp_path):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)  # no W&B login
    out = subprocess.run(
        search_cmd(run, *SURROGATE, "logger=wandb", "search.max_episodes=3"),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # A resumed search continues the same W&B run id (offline: a second folder, same id).
    more = subprocess.run(
        search_cmd(run, *SURROGATE, "logger=wandb", "search.max_episodes=4"),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")} == {
        runs[0].name.rsplit("-", 1)[-1]
    }
    from blockqnn.search.loggers import run_id

    assert runs[0].name.endswith(run_id(run))
    files = list(runs[0].glob("*.wandb"))
    assert files and files[0].stat().st_size > 0
    history = _read_wandb_history(files[0])
    logged = [h for h in history if "reward" in h and "best_reward" in h]
    assert [h["_step"] for h in logged] == [0, 1, 2]
    assert all(h["status"] == "ok" and 0 <= h["accuracy"] <= 1 for h in logged)
    # Running counts and the elapsed time per episode; the best block drawn when it changed.
    assert [h["trained"] + h["reused_total"] + h["predicted_total"] for h in logged] == [1, 2, 3]
    assert all(h["elapsed_s"] >= 0 for h in logged)
    drawn = [h for h in history if "best_block/caption" in h]
    assert drawn and all(json.loads(h["best_block/caption"]) for h in drawn)
    assert [h["_step"] for h in drawn] == [
        h["_step"] for h in logged if h["reward"] == h["best_reward"]
    ]
    # job_type and tags name the agent, the data and the schedule; outside a sweep, no group.
    run_rec = next(
        r.run for r in _read_wandb_records(files[0]) if r.WhichOneof("record_type") == "run"
    )
    assert run_rec.job_type == "qlearning" and not run_rec.run_group
    assert {"agent:qlearning", "data:digits"} <= set(run_rec.tags)
    summary = {}  # the run's summary: its updates, in order
    for r in _read_wandb_records(files[0]):
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
    best = max(h["reward"] for h in logged)
    assert summary["best_reward"] == pytest.approx(best) and json.loads(summary["best_nsc"])
    tables = list(runs[0].glob("files/media/table/blocks_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert [row[0] for row in table["data"]] == [0, 1, 2]
    assert list(runs[0].glob("files/media/images/best_block_*.png"))
    # the final drawings of the best block and of the network it is stacked into
    assert list(runs[0].glob("files/media/images/best_network_*.png"))
    final = [h for h in history if "best_network" in h or "best_network/_type" in h]
    assert final, "best_network not logged"


def _read_wandb_history(path):
    """History rows of a .wandb file."""
    from blockqnn.wandb_files import history_rows

    return history_rows(path)


def _read_wandb_records(path):
    from blockqnn.wandb_files import parsed_records

    return parsed_records(path)


def test_experiment_paper_composes_with_the_papers_settings():
    cfg = cfg_for("experiment=paper")
    from blockqnn.search.setup import schedule_of

    assert (
        cfg.space.max_layers == 23
        and cfg.agent.batch_size is None
        and schedule_of(cfg).batch_size == 64
    )
    assert (
        cfg.agent.epsilon_schedule == "paper"
        and cfg.recipe.epochs == 12
        and cfg.recipe.batch_size == 256
    )
    assert (
        cfg.data.name == "cifar100"
        and cfg.network.blocks_per_stage == 2
        and cfg.network.width == 32
    )
    # it runs (at a tiny size, synthetic data): tests/test_experiments.py


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_pool_executor_search(tmp_path, mode, local_reference):
    run = tmp_path / "run"
    out = subprocess.run(
        search_cmd(
            run, "executor=pool", f"search.asynchronous={'true' if mode == 'async' else 'false'}"
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = episodes_of(run)
    assert [r[0] for r in rows] == list(range(12)) and all(r[2] == "ok" for r in rows)
    # Synchronous: every block of an iteration is sampled before any of its results is learned.
    # Asynchronous: no barrier, so some block is sampled after an earlier block of its iteration
    # (same batch of 4 episodes) has finished.
    con = sqlite3.connect(run / "search.db")
    times = con.execute(
        "SELECT id, started_at, finished_at FROM episodes WHERE reused = 0 ORDER BY id"
    ).fetchall()
    con.close()
    overlap = any(
        a[0] // 4 == b[0] // 4 and a[0] < b[0] and b[1] > a[2] for a in times for b in times
    )
    assert overlap == (mode == "async")
    if mode == "sync":  # synchronous iterations: the same blocks as the local executor
        assert [r[1] for r in rows] == [r[1] for r in local_reference]
        # Rewards agree up to float reductions (pool workers use 1 thread, the local run 2): most
        # to within a validation sample or two; a one-epoch training can amplify the rounding
        # differences of one block into a few samples (seen: 9, and on 2026-12-02 18, of 288
        # digits images); a different block or recipe differs by far more.
        diffs = sorted(abs(r[3] - ref[3]) for r, ref in zip(rows, local_reference))
        assert diffs[len(diffs) // 2] < 0.01 and diffs[-1] < 0.1, diffs


@pytest.mark.slow
def test_pool_retries_evaluations_of_a_killed_worker(tmp_path):
    """A worker killed while it evaluates (both evaluations held in their workers by a gate
    file, so the kill lands mid-evaluation on any machine) has its evaluation run again."""
    from blockqnn.executors import PoolExecutor
    from tests.faults import spec

    gate, log = tmp_path / "gate", tmp_path / "log"
    gate.touch()
    pool = PoolExecutor(
        spec(f"+evaluator.gate={gate}", f"+evaluator.log={log}"),
        workers_per_gpu=1,
        cpu_workers=2,
        gpus=[],
        threads_per_cpu_worker=1,
        max_retries=2,
    )
    try:
        for tag, block in (("a", [[1, 1, 3, 0, 0]]), ("b", [[1, 1, 5, 0, 0]])):
            pool.submit(tag, block)
        deadline = time.time() + 120
        while time.time() < deadline and len(_lines(log)) < 2:  # both evaluations started
            time.sleep(0.05)
        assert len(_lines(log)) == 2, "the workers never started"
        victim = int(_lines(log)[0].split()[1])  # the process evaluating the first block
        os.kill(victim, signal.SIGKILL)
        gate.unlink()
        results = {}
        deadline = time.time() + 300
        while pool.in_flight and time.time() < deadline:
            results.update(pool.wait())
    finally:
        pool.close()
    assert set(results) == {"a", "b"}
    assert all(r["status"] == "ok" for r in results.values())
    assert pool.retries >= 1  # the killed worker's evaluation was submitted again


def _lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@MACHINE_WIDE
def test_ray_executor_search(tmp_path, local_reference):
    run = tmp_path / "run"
    out = subprocess.run(
        search_cmd(run, "executor=ray", "executor.local_cpus=2", "search.max_episodes=8"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = episodes_of(run)
    assert [r[0] for r in rows] == list(range(8)) and all(r[2] == "ok" for r in rows)
    assert [r[1] for r in rows] == [r[1] for r in local_reference[:8]]


@pytest.mark.slow
@MACHINE_WIDE
def test_ddp_per_candidate_search(tmp_path):
    """Each candidate trains on 2 processes; recipe.batch_size is the global batch (half each)."""
    run, seen = tmp_path / "run", tmp_path / "batches"
    out = subprocess.run(
        search_cmd(
            run,
            "evaluator.devices=2",
            "search.max_episodes=2",
            "recipe.batch_size=32",
            "+callbacks.record._target_=tests.conftest.BatchRecorder",
            f"+callbacks.record.folder={seen}",
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = episodes_of(run)
    assert len(rows) == 2 and all(r[2] == "ok" for r in rows), rows
    ranks = [json.loads((seen / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 and max(r["sizes"]) == 16 for r in ranks)


@pytest.mark.slow
@MACHINE_WIDE
def test_ddp_ranks_agree_when_one_rank_fails(tmp_path):
    """One rank runs out of memory while the other waits in a collective: the candidate is
    recorded `oom` at once (not after the backend's 30-minute timeout), nothing left running."""
    run = tmp_path / "run"
    out = subprocess.run(
        search_cmd(
            run,
            "evaluator.devices=2",
            "search.max_episodes=1",
            "recipe.batch_size=32",
            "+callbacks.oom._target_=tests.conftest.OOMOnRank",
            "+callbacks.oom.rank=1",
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = episodes_of(run)
    assert [r[2] for r in rows] == [
        "oom"
    ]  # within the subprocess's 600 s: not the backend's 30 min
    # Nothing left running: no rank of the candidate outlived its search.
    import psutil

    def ranks():
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if "blockqnn.evaluator.ddp_worker" in " ".join(p.info["cmdline"] or []):
                found.append(p.pid)
        return found

    deadline = time.time() + 15
    while ranks() and time.time() < deadline:
        time.sleep(0.1)
    assert ranks() == []


@pytest.mark.slow
@MACHINE_WIDE
def test_local_ray_listens_on_loopback_only():
    import ipaddress

    code = (
        "import psutil, json\n"
        "from blockqnn.executors import RayExecutor\n"
        "ex = RayExecutor({}, address=None, num_cpus=1, num_gpus=0, max_in_flight=None, max_retries=0,"
        " include_dashboard=False, local_cpus=1)\n"
        "import ray\n"
        "print(ray.get(ray.remote(lambda: 1).remote()))\n"
        "addrs = []\n"
        "for p in psutil.Process().children(recursive=True):\n"
        "    try:\n"
        "        addrs += [c.laddr.ip for c in p.net_connections(kind='inet') if c.status == 'LISTEN']\n"
        "    except psutil.Error:\n"
        "        pass\n"
        "print(json.dumps(addrs))\n"
        "ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    addrs = json.loads(out.stdout.strip().splitlines()[-1])
    assert addrs, "no listening sockets found for the Ray processes"
    for a in addrs:
        ip = ipaddress.ip_address(a)
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        assert ip.is_loopback, f"a Ray process listens on {a}"


def test_wandb_is_offline_unless_set_up(tmp_path, monkeypatch):
    from blockqnn.search.loggers import wandb_mode

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert wandb_mode() == "offline"
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine pypi.org login a password b\n")
    netrc.chmod(0o600)
    assert wandb_mode() == "offline"  # credentials for another host are not a W&B login
    netrc.write_text("machine api.wandb.ai login user password key\n")
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"
    assert wandb_mode("offline") == "offline"


def test_failures_that_are_bugs_stop_the_search_with_the_first_error(tmp_path, caplog):
    from blockqnn.search.loop import SearchFailed
    from tests.conftest import BrokenEvaluator

    cfg = cfg_for(*QUICK)
    with caplog.at_level("ERROR", logger="blockqnn.search"), pytest.raises(SearchFailed) as info:
        Search(cfg, tmp_path, evaluator=BrokenEvaluator()).run()
    msg = str(info.value)
    assert "3 evaluations failed in a row" in msg and "ZeroDivisionError: a deliberate bug" in msg
    assert f"python search.py hydra.run.dir={tmp_path}" in msg
    assert (
        caplog.text.count("Traceback") == 3 and "in _inner" in caplog.text
    )  # full tracebacks logged
    rows = SearchStore(tmp_path / "search.db", _fp(cfg)).episodes()
    # Nothing lost: the failures are recorded (never taught); the rest of the iteration stays to run.
    assert [r["status"] for r in rows] == ["failed"] * 3 + ["running"]
    assert all("Traceback" in r["error"] for r in rows[:3])
    # Resuming with a working evaluator finishes the search; failed blocks are trained again.
    fake = FakeEvaluator()
    Search(cfg, tmp_path, evaluator=fake).run()
    rows = SearchStore(tmp_path / "search.db", _fp(cfg)).episodes()
    assert len(rows) == 12 and [r["status"] for r in rows[3:]] == ["ok"] * 9


@pytest.mark.slow
def test_a_broken_evaluator_stops_search_py_after_three_failures(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        search_cmd(run, "evaluator._target_=tests.conftest.BrokenEvaluator"),
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert "3 evaluations failed in a row" in out.stderr and f"hydra.run.dir={run}" in out.stderr
    log = (run / "search.log").read_text()
    assert log.count("Traceback (most recent call last)") == 3 and "a deliberate bug" in log
    assert [r[2] for r in episodes_of(run)] == ["failed"] * 3 + ["running"]


def test_failed_blocks_are_trained_again_and_timeouts_reused_after_max_attempts(tmp_path):
    from blockqnn.result import empty_result

    class Flaky(FakeEvaluator):
        """Fails the first evaluation of each block (a lost worker), times out on one-layer blocks."""

        def __call__(self, nsc):
            from blockqnn.space.nsc import Block

            key = Block.parse(nsc).key
            first = key not in self.calls
            result = super().__call__(nsc)
            if first:
                return empty_result("failed", "Traceback: worker lost (simulated)")
            if len(Block.parse(nsc).body) == 1:
                return empty_result("timeout", "ran past evaluator.timeout_s")
            return result

    cfg = cfg_for(
        *QUICK,
        "space.max_layers=1",
        "agent.epsilon_schedule=[[1.0,12]]",
        "search.max_consecutive_failures=100",
        "search.max_attempts=2",
        "agent=random",
    )
    flaky = Flaky()
    Search(cfg, tmp_path, evaluator=flaky).run()
    rows = SearchStore(tmp_path / "search.db", _fp(cfg)).episodes()
    by_key: dict = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    for eps in by_key.values():
        trained = [e for e in eps if not e["reused"]]
        assert (
            trained[0]["status"] == "failed"
        )  # a failure is never reused: the block is trained again
        for e in eps:
            if e["reused"]:
                assert e["status"] in ("ok", "timeout")
        timeouts = [e for e in trained if e["status"] == "timeout"]
        assert len(timeouts) <= 2  # a timeout is trained again until max_attempts, then reused
        if len(timeouts) == 2:
            assert all(e["status"] == "timeout" for e in eps[eps.index(timeouts[1]) + 1 :])
    assert any(
        len([e for e in eps if e["status"] == "timeout" and not e["reused"]]) == 2
        for eps in by_key.values()
    )


def test_experiment_paper_keeps_the_papers_constants_and_other_agents_compose():
    cfg = cfg_for("experiment=paper")
    assert (
        cfg.agent.name == "qlearning"
        and cfg.agent.params.learning_rate == 0.01
        and cfg.agent.params.q_init == 0.5
    )
    short = cfg_for()  # the short-search defaults (BENCHMARKS.md, the agent ablation)
    assert short.agent.params.learning_rate == 0.1 and short.agent.params.q_init == 1.0
    rnd = cfg_for("experiment=paper", "agent=random")
    from blockqnn.search.setup import build_agent, schedule_of

    assert rnd.agent.name == "random" and rnd.agent.epsilon_schedule == "paper"
    assert schedule_of(rnd).batch_size == 64 and schedule_of(rnd).planned == 11392

    assert type(build_agent(rnd)).__name__ == "RandomAgent"


def test_pool_workers_gpus_map_through_the_parents_cuda_visible_devices(monkeypatch):
    from blockqnn.errors import ConfigError
    from blockqnn.executors import PoolExecutor, visible_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert [visible_device(i) for i in (0, 1)] == ["3", "5"]
    pool = PoolExecutor(
        {"evaluator": {}},
        workers_per_gpu=2,
        cpu_workers=1,
        gpus=[1, 0],
        threads_per_cpu_worker=1,
        max_retries=1,
    )
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in pool.workers] == ["5", "5", "3", "3"]
    pool.close()
    with pytest.raises(ConfigError, match="shows 2"):
        visible_device(2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_device(1) == "1"


def test_console_says_what_will_happen_and_fits_80_columns(tmp_path):
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False, color_system=None)
    cfg = cfg_for(
        *QUICK,
        "agent.epsilon_schedule=paper",
        "agent.batch_size=4",
        "search.max_episodes=3",
        "reward.mu=1.0",
        "reward.rho=8.0",
    )
    Search(cfg, tmp_path, evaluator=FakeEvaluator(), console=console).run()
    text = buf.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    import re

    flat = " ".join(re.sub("[│╭╮╰╯─┃┏┓┗┛━┡┩┠┨┯┷┼┿╇╈┌┐└┘├┤┬┴]", " ", text).split())
    # The start-up panel: the schedule by name with iterations x batch = planned, the cap, the resume command.
    assert (
        "paper: 178 iterations x 4 = 712 blocks; this run stops at 3 (search.max_episodes)" in flat
    )
    assert (
        "learning_rate 0.1" in flat
        and "acc - 0.01 (1.0 log FLOPs/FLOPs(plain) + 8.0 log density)" in flat
    )
    assert "python search.py hydra.run.dir=" in flat
    # The top-blocks table: one compact line per block (folded only when a block is long).
    from blockqnn.space.nsc import Block

    top = json.loads((tmp_path / "topk.json").read_text())
    assert Block.parse(top[0]["nsc"]).compact() in flat


def test_block_compact_form():
    from blockqnn.space.nsc import Block

    b = Block.parse(
        [[1, 1, 3, 0, 0], [2, 2, 3, 1, 0], [3, 5, 0, 1, 2], [4, 4, 0, 0, 0], [5, 6, 0, 3, 4]]
    )
    assert b.compact() == "1:conv3 2:max3(1) 3:add(1,2) 4:id 5:cat(3,4)"


def test_the_fingerprint_holds_what_changes_results_not_where_things_are(tmp_path):
    """evaluator.timeout_s, evaluator.devices and search.max_attempts decide which evaluations
    time out or are tried again: a resume with others is refused. data.root and data.download
    say where the data is and the surrogate's table counts by its content: a moved folder or a
    copied table resumes. A folder whose stored fingerprint predates this (data.root in it, no
    limits) still resumes."""
    import shutil

    base = ["evaluator=surrogate", "data=cifar10", "data.root=/a"]
    store = SearchStore(tmp_path / "search.db", _fp(cfg_for(*base)))
    store.close()
    for moved in ("data.root=/b", "data.download=true"):
        SearchStore(tmp_path / "search.db", _fp(cfg_for(*base, moved))).close()
    for changed, key in (
        ("evaluator.timeout_s=30", "limits.timeout_s"),
        ("search.max_attempts=5", "limits.max_attempts"),
        ("evaluator.devices=2", "limits.devices"),
    ):
        with pytest.raises(StoreError, match=key):
            SearchStore(tmp_path / "search.db", _fp(cfg_for(*base, changed)))
    from blockqnn.evaluator.surrogate import DEFAULT_TABLE

    copy = tmp_path / "copy.csv.gz"
    shutil.copy(DEFAULT_TABLE, copy)
    SearchStore(tmp_path / "search.db", _fp(cfg_for(*base, f"evaluator.table={copy}"))).close()
    other = tmp_path / "other.csv.gz"
    other.write_bytes(copy.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(StoreError, match="table"):
        SearchStore(tmp_path / "search.db", _fp(cfg_for(*base, f"evaluator.table={other}")))
    # A stored fingerprint of the earlier form: data.root inside, no limits, no table digest.
    old = {k: v for k, v in _fp(cfg_for(*base)).items() if k not in ("limits", "table")}
    old["data"] = {**old["data"], "root": "/somewhere/else"}
    legacy = tmp_path / "legacy.db"
    SearchStore(legacy, old).close()
    SearchStore(legacy, _fp(cfg_for(*base, "evaluator.timeout_s=30"))).close()


@pytest.mark.parametrize("shared", [True, False])
def test_oom_is_tried_again_where_the_device_may_be_shared(tmp_path, monkeypatch, shared):
    """An oom on a GPU that other candidates share (pool workers_per_gpu > 1, fractional Ray
    GPUs) may be theirs: the block is trained again when sampled again, up to
    search.max_attempts, like a timeout; on a device of its own, its oom is its result."""
    from blockqnn.search import loop

    monkeypatch.setattr(loop, "device_shared", lambda cfg: shared)
    fake, seen = FakeEvaluator(), []

    from blockqnn.space.nsc import Block

    def oom_first(nsc, repeat=0):
        seen.append(Block.parse(nsc).key)
        result = fake(nsc, repeat)
        return {**result, "status": "oom", "reward": 0.0} if len(seen) == 1 else result

    cfg = cfg_for(*QUICK, "space.max_layers=1", "agent.epsilon_schedule=[[1.0,5]]")
    Search(cfg, tmp_path, evaluator=oom_first).run()
    first = seen[0]
    again = seen[1:].count(first)
    assert (again >= 1) if shared else (again == 0)


def test_a_folder_from_before_a_config_key_resumes_and_a_changed_value_is_refused(tmp_path):
    """A key added to a fingerprinted section later (network.params, network.max_width, ...)
    is absent from older folders' fingerprints: read at its neutral value, they resume; a start
    that sets another value is refused."""
    cfg = cfg_for(*QUICK)
    store = SearchStore(tmp_path / "search.db", _fp(cfg))
    store.close()
    con = sqlite3.connect(tmp_path / "search.db")
    fp = json.loads(con.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()[0])
    keys = ("params", "flops", "max_width", "budget_tolerance", "parameter_free")
    for key in (*keys, "drop_path", "channels_last"):
        del fp["network"][key]
    con.execute("UPDATE meta SET value = ? WHERE name = 'fingerprint'", (json.dumps(fp),))
    con.commit()
    con.close()
    SearchStore(tmp_path / "search.db", _fp(cfg)).close()  # resumes
    # Without a budget network.parameter_free changes nothing: either value resumes.
    SearchStore(
        tmp_path / "search.db", _fp(cfg_for(*QUICK, "network.parameter_free=allow"))
    ).close()
    with pytest.raises(StoreError, match="network.params: stored null vs now 5000"):
        SearchStore(tmp_path / "search.db", _fp(cfg_for(*QUICK, "network.params=5000")))
    # A folder searched at a budget before the key existed trained blocks without parameters:
    # it resumes as "allow" (the default), and "refuse" is refused.
    budget = cfg_for(*QUICK, "network.params=5000")
    SearchStore(tmp_path / "b.db", _fp(budget)).close()
    con = sqlite3.connect(tmp_path / "b.db")
    fp = json.loads(con.execute("SELECT value FROM meta WHERE name = 'fingerprint'").fetchone()[0])
    del fp["network"]["parameter_free"]
    con.execute("UPDATE meta SET value = ? WHERE name = 'fingerprint'", (json.dumps(fp),))
    con.commit()
    con.close()
    refuse = cfg_for(*QUICK, "network.params=5000", "network.parameter_free=refuse")
    SearchStore(tmp_path / "b.db", _fp(budget)).close()
    with pytest.raises(StoreError, match='parameter_free: stored "allow" vs now "refuse"'):
        SearchStore(tmp_path / "b.db", _fp(refuse))
