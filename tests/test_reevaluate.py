"""Re-evaluation of the leading blocks (search.reevaluate): each repeat its own row with its own
seed, rankings by the mean, the agent's memory relabelled, and an exact resume after SIGKILL."""

import json
import signal
import sqlite3
import subprocess

import pytest

from blockqnn.search.loop import Search
from blockqnn.search.store import SearchStore
from tests.conftest import ROOT, compose_search, fingerprint_of
from tests.faults import killed_search
from tests.helpers import finished, search_argv

SURR = [
    "evaluator=surrogate",
    "logger=none",
    "space.max_layers=10",
    "agent.epsilon_schedule=[[1.0,4],[0.3,4]]",
    "agent.batch_size=16",
    "search.reevaluate.top=3",
    "search.reevaluate.repeats=2",
]


def _rows(run_dir, table):
    con = sqlite3.connect(run_dir / "search.db")
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY id")]
    con.close()
    return rows


def test_leaders_are_reevaluated_with_fresh_seeds_and_ranked_by_their_mean(tmp_path):
    cfg = compose_search(*SURR)
    Search(cfg, tmp_path).run()
    episodes, reevals = _rows(tmp_path, "episodes"), _rows(tmp_path, "reevaluations")
    assert len(episodes) == 128 and reevals and all(r["status"] == "ok" for r in reevals)
    # each re-evaluation is its own row: repeats 1..2 per block, each with its own seed, distinct noise
    by_key: dict[str, list[dict]] = {}
    for r in reevals:
        by_key.setdefault(r["key"], []).append(r)
    assert all(sorted(r["repeat"] for r in rs) == [1, 2] for rs in by_key.values())
    assert len({r["seed"] for r in reevals}) == 2 and 0 not in {r["seed"] for r in reevals}
    first = {e["key"]: e for e in reversed(episodes) if not e["reused"]}
    for key, rs in by_key.items():
        assert (
            len({first[key]["reward"], *(r["reward"] for r in rs)}) == 3
        )  # independent noise per repeat
    top = json.loads((tmp_path / "topk.json").read_text())
    best = json.loads((tmp_path / "best_block.json").read_text())
    # the three leaders by the mean are all re-evaluated: mean of 3, with a standard error
    assert [t["evaluations"] for t in top[:3]] == [3, 3, 3]
    assert best["key"] == top[0]["key"] and best["reward"] == pytest.approx(
        (first[best["key"]]["reward"] + sum(r["reward"] for r in by_key[best["key"]])) / 3
    )
    assert best["reward_first"] == first[best["key"]]["reward"] and best["reward_se"] > 0
    # re-evaluated leaders first (by their mean), then the others (by their one reward)
    assert [t["evaluations"] for t in top] == sorted((t["evaluations"] for t in top), reverse=True)
    for n in (1, 3):
        group = [t["reward"] for t in top if t["evaluations"] == n]
        assert group == sorted(group, reverse=True)
    # the agent learned the mean: every memory entry of a re-evaluated block holds its mean
    store = SearchStore(tmp_path / "search.db", fingerprint_of(cfg))
    small, parts = store.agent_state()
    memory = {int(k): v for k, v in parts["agent.memory"].items()}
    for key in by_key:
        mean = store.key_stats(key)["reward"]
        told = store.told_indices(key)
        assert told and all(memory[i][1] == pytest.approx(mean) for i in told)
        assert store.lookup(key)["reward"] == pytest.approx(mean)  # and later reuse gets the mean
    store.close()


def test_without_reevaluation_nothing_is_trained_again(tmp_path):
    Search(compose_search(*SURR, "search.reevaluate.top=0"), tmp_path).run()
    assert _rows(tmp_path, "reevaluations") == []
    assert json.loads((tmp_path / "best_block.json").read_text())["evaluations"] == 1


def test_search_with_reevaluation_resumes_exactly_after_sigkill(tmp_path):
    """Killed while re-evaluating (each iteration and at the end), the resumed search ends with
    the episodes and the re-evaluations of a search that never stopped, each recorded once."""
    extra = [
        "evaluator=surrogate",
        "logger=none",
        "space.max_layers=8",
        "agent.batch_size=8",
        "agent.epsilon_schedule=[[1.0,3],[0.3,3]]",
        "search.reevaluate.top=2",
        "search.reevaluate.repeats=3",
        "search.reevaluate.every_iteration=true",
        "evaluator._target_=tests.faults.FaultyEvaluator",
    ]
    ref = tmp_path / "ref"
    Search(compose_search(*extra), ref).run()  # the undisturbed search, in this process
    run = tmp_path / "killed"
    total = {t: finished(ref, t) for t in ("episodes", "reevaluations")}
    # Killed while re-evaluating in the first iterations, mid-search, then halfway through the
    # re-evaluations left (a resumed process records at least what is not yet committed).
    for table, after in (("reevaluations", 2), ("episodes", 30), ("reevaluations", None)):
        if after is None:
            after = max(1, (total[table] - finished(run, table)) // 2)
        kind = "finish" if table == "episodes" else "finish_reevaluation"
        proc = killed_search(after, search_argv(run, *extra)[2:], kind, commit_every=5)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert 0 < finished(run, "reevaluations") < total["reevaluations"]
    done = subprocess.run(
        search_argv(run, *extra), capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cols = ("id", "nsc", "status", "reward")
    assert [tuple(e[c] for c in cols) for e in _rows(run, "episodes")] == [
        tuple(e[c] for c in cols) for e in _rows(ref, "episodes")
    ]
    rcols = ("id", "key", "repeat", "seed", "status", "reward", "after_episode", "round")
    assert [tuple(r[c] for c in rcols) for r in _rows(run, "reevaluations")] == [
        tuple(r[c] for c in rcols) for r in _rows(ref, "reevaluations")
    ]
    best, ref_best = (json.loads((d / "best_block.json").read_text()) for d in (run, ref))
    assert {k: v for k, v in best.items() if k != "wall_time"} == {
        k: v for k, v in ref_best.items() if k != "wall_time"
    }


def test_lost_repeats_are_retried_counted_and_reported_and_leaders_keep_their_rank(tmp_path):
    """A repeat that fails (a lost worker: not the block's fault) is tried again with the next
    seed, counted toward search.max_consecutive_failures and reported; the leader whose repeat
    was lost still ranks among the leaders (before: never retried, and demoted)."""
    import io

    from rich.console import Console

    from blockqnn.evaluator import evaluator_spec, make_evaluator
    from blockqnn.result import empty_result

    cfg = compose_search(*SURR, "search.reevaluate.max_rounds=1")
    surrogate = make_evaluator(evaluator_spec(cfg))
    calls = []

    def flaky(nsc, repeat=0):
        calls.append(repeat)
        if repeat == 1 and calls.count(1) == 1:  # the first repeat of the first leader is lost
            return empty_result("failed", "worker lost")
        return surrogate(nsc, repeat=repeat)

    out = io.StringIO()
    Search(cfg, tmp_path, evaluator=flaky, console=Console(file=out, width=200)).run()
    reevals = _rows(tmp_path, "reevaluations")
    lost = [r for r in reevals if r["status"] == "failed"]
    assert len(lost) == 1
    again = [r for r in reevals if r["key"] == lost[0]["key"]]
    assert sorted(r["repeat"] for r in again) == [1, 2, 3]  # tried again with the next seed
    assert sorted(r["status"] for r in again) == ["failed", "ok", "ok"]
    top = json.loads((tmp_path / "topk.json").read_text())
    assert [t["evaluations"] for t in top[:3]] == [3, 3, 3]
    assert "1 repeat(s) failed or timed out" in out.getvalue()


def test_the_search_says_when_max_rounds_runs_out(tmp_path):
    import io

    from rich.console import Console

    out = io.StringIO()
    # One round of the top 3 with many lucky single draws left: the ranking still brings up
    # blocks not re-evaluated after it.
    cfg = compose_search(*SURR, "search.reevaluate.max_rounds=1", "search.reevaluate.top=8")
    Search(cfg, tmp_path, console=Console(file=out, width=200)).run()
    assert "re-evaluation stopped after search.reevaluate.max_rounds=1 rounds" in out.getvalue()


def test_a_budget_in_trainings_stops_sampling_there_and_holds_on_resume(tmp_path):
    """search.max_trainings: the search trains exactly that many distinct blocks (reused
    episodes cost none), then re-evaluates its leaders on top; a resumed search adds none."""
    cfg = compose_search(
        *SURR, "space.max_layers=2", "agent.epsilon_schedule=[[1.0,8],[0.1,8]]", "agent.batch_size=8",
        "search.max_trainings=20",
    )  # fmt: skip
    Search(cfg, tmp_path).run()
    episodes = _rows(tmp_path, "episodes")
    trained = [e for e in episodes if not e["reused"] and not e["predicted"]]
    assert len(trained) == 20 and len({e["key"] for e in trained}) == 20
    assert 20 < len(episodes) < 128  # 2-layer blocks repeat: reuse is free; the schedule is cut
    assert _rows(tmp_path, "reevaluations")  # re-evaluation comes on top of the budget
    Search(cfg, tmp_path).run()
    assert _rows(tmp_path, "episodes") == episodes
    # The same search without the budget samples its whole schedule.
    full = tmp_path / "full"
    Search(compose_search(*SURR, "space.max_layers=2"), full).run()
    assert len(_rows(full, "episodes")) == 128


def test_a_resumed_loggers_counts_equal_the_live_loops(tmp_path):
    """The loggers' catch-up rows and W&B's summary count as the live loop does: an evolution
    child that is a known block is a fresh draw (a re-evaluation), not a reused episode."""
    from blockqnn.search.loggers import catch_up_rows, run_summary

    cfg = compose_search(
        *SURR, "agent=evolution", "space.max_layers=2", "agent.epsilon_schedule=[[1.0,6]]",
        "agent.batch_size=8",
    )  # fmt: skip
    search = Search(cfg, tmp_path)
    search.run()
    store = SearchStore(tmp_path / "search.db", fingerprint_of(cfg))
    episodes = store.episodes()
    store.close()
    assert any(e["retrained"] for e in episodes)  # 2-layer blocks repeat: evolution redraws them
    last = catch_up_rows(episodes, set())[-1]
    for k in ("trained", "reused_total", "predicted_total"):
        assert last[k] == search.counts[k], k
        assert run_summary(episodes)[k] == search.counts[k], k


def test_invalid_evaluations_cost_no_training_of_the_budget(tmp_path):
    """An `invalid` result (refused before any training: over the budget, parameter-free at a
    budget) does not count toward search.max_trainings: the search still trains 20 blocks, and
    the live loop, the loggers' catch-up rows and W&B's summary count the refusals apart."""
    from blockqnn.evaluator import evaluator_spec, make_evaluator
    from blockqnn.result import empty_result
    from blockqnn.search.loggers import catch_up_rows, run_summary

    cfg = compose_search(
        *SURR, "space.max_layers=3", "agent.epsilon_schedule=[[1.0,8],[0.1,8]]", "agent.batch_size=8",
        "search.max_trainings=20",
    )  # fmt: skip
    surrogate = make_evaluator(evaluator_spec(cfg))

    def refusing(nsc, repeat=0):  # refuses about a third of the blocks, the same ones each time
        if sum(sum(layer) for layer in nsc) % 3 == 0:
            return empty_result("invalid", "refused")
        return surrogate(nsc, repeat=repeat)

    search = Search(cfg, tmp_path, evaluator=refusing)
    search.run()
    episodes = _rows(tmp_path, "episodes")
    first = [e for e in episodes if not e["reused"] and not e["predicted"]]
    trained = [e for e in first if e["status"] != "invalid"]
    refused = [e for e in first if e["status"] == "invalid"]
    assert len(trained) == 20 and refused  # refusals came on top of the 20 trainings
    assert search.counts["trained"] == 20 and search.counts["invalid_total"] == len(refused)
    store = SearchStore(tmp_path / "search.db", fingerprint_of(cfg))
    stored = store.episodes()
    store.close()
    last = catch_up_rows(stored, set())[-1]
    for k in ("trained", "invalid_total", "reused_total", "predicted_total"):
        assert last[k] == search.counts[k] == run_summary(stored)[k], k
    Search(cfg, tmp_path, evaluator=refusing).run()  # a resume counts them apart too: no more
    assert _rows(tmp_path, "episodes") == episodes
