"""NAS-Bench-201: the cell space, the tabular evaluator, every agent on it through search.py,
resume after SIGKILL, and the spaces' shared interface (NSC mutations included)."""

import json
import random
import signal
import sqlite3
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockqnn.agent import AGENTS
from blockqnn.agent.schedules import parse_schedule
from blockqnn.errors import BlockError, ConfigError
from blockqnn.evaluator.nb201 import NB201Evaluator, optimum, seed_mean, table
from blockqnn.search.loop import Search
from blockqnn.space.nb201 import OPS, Cell, NB201Space
from blockqnn.space.nsc import Block, NSCSpace
from blockqnn.space.registry import parse_any
from tests.conftest import compose_search
from tests.faults import killed_search
from tests.helpers import blocks, search_argv

NB = ["experiment=nb201", "logger=none"]
SMALL = [*NB, "agent.epsilon_schedule=paper:40", "search.reevaluate.top=2"]


# ---------------------------------------------------------------------------- the space
def test_cell_forms_key_and_arch_string():
    names = [
        "nor_conv_3x3",
        "nor_conv_3x3",
        "nor_conv_3x3",
        "nor_conv_1x1",
        "nor_conv_3x3",
        "skip_connect",
    ]
    cell = Cell.parse(names)
    assert cell.key == "333231"
    assert cell.arch == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
        "|nor_conv_1x1~0|nor_conv_3x3~1|skip_connect~2|"
    )
    # Every accepted form gives the same cell: names, indices, the tables' parameters, arch string.
    for form in (
        json.dumps(names),
        [3, 3, 3, 2, 3, 1],
        {f"Op{i}": n for i, n in enumerate(names)},
        cell.arch,
        cell.to_json(),
    ):
        assert Cell.parse(form) == cell
    assert cell.as_params() == {f"Op{i}": n for i, n in enumerate(names)}
    assert parse_any(cell.to_list()) == cell and parse_any([[1, 1, 3, 0, 0]]) == Block.parse(
        [[1, 1, 3, 0, 0]]
    )


@pytest.mark.parametrize(
    "bad, words",
    [
        (["none"] * 5, "6 ops"),
        (["none"] * 5 + ["conv_3x3"], "edge Op5"),
        ([0, 1, 2, 3, 4, 5], "edge Op5"),
        ([0, 1, 2, 3, 4, True], "edge Op5"),
        ({"Op0": "none"}, "Op1"),
        ("not json", "arch string"),
    ],
)
def test_bad_cells_are_refused_naming_what_is_wrong(bad, words):
    with pytest.raises(BlockError, match=words):
        Cell.parse(bad)


def test_space_interface_walks_mutations_and_neighbours():
    space, rng = NB201Space(), random.Random(0)
    keys = {space.sample(rng).key for _ in range(3000)}
    assert len(keys) > 2500  # uniform over 15,625
    for _ in range(200):
        cell = space.sample(rng)
        assert space.build(space.decisions(cell)) == cell
        child = space.mutate(cell, rng)
        assert sum(a != b for a, b in zip(child.ops, cell.ops)) == 1
        near = space.neighbours(cell)
        assert len(near) == 24 and len({c.key for c in near}) == 24 and cell not in near
    assert all(len(space.actions(t)) == len(OPS) for t in range(6))
    assert [space.ends(t, space.actions(t)[0]) for t in range(6)] == [False] * 5 + [True]


def test_the_table_has_every_cell_and_the_documented_optima():
    for dataset, (key, value) in {
        "cifar10": ("333132", 0.9161),
        "cifar100": ("333133", 0.7349),
        "imagenet16": ("322133", 0.4673),
    }.items():
        rows = table(dataset)
        assert len(rows) == 15625
        assert optimum(dataset)[0] == key
        assert optimum(dataset)[1] == pytest.approx(value, abs=5e-5)
        assert seed_mean(dataset, Cell.parse(key).to_list()) == optimum(dataset)[1]


def test_evaluator_draws_one_seed_reproducibly_and_fresh_for_repeats():
    ev = NB201Evaluator(run={"seed": 3}, dataset="cifar100")
    cell = ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "none", "avg_pool_3x3", "nor_conv_3x3"]
    row = table("cifar100")[Cell.parse(cell).key]
    first = ev(cell)
    assert first["status"] == "ok" and first["reward"] == first["accuracy"]
    assert first["accuracy"] * 100 in row["val_acc"]
    assert first["cost"] == row["train_time"][0] and first["params"] == round(
        row["model_size"][0] * 1e6
    )
    again = NB201Evaluator(run={"seed": 3}, dataset="cifar100")(cell)
    assert {**again, "wall_time": 0} == {**first, "wall_time": 0}  # reproducible from the seed
    draws = {ev(cell, repeat=r)["accuracy"] for r in range(1, 40)}
    assert draws == {v / 100 for v in row["val_acc"]}  # fresh draws reach every seed
    other = NB201Evaluator(run={"seed": 4}, dataset="cifar100")
    cells = [[(i * 7 + j) % 5 for j in range(6)] for i in range(40)]
    same = sum(other(c)["accuracy"] == ev(c)["accuracy"] for c in cells)
    assert 5 < same < 35  # another run seed draws other seeds of the table, about half the time
    assert ev(["bad"] * 6)["status"] == "invalid"
    with pytest.raises(ConfigError, match="imagenet16"):
        NB201Evaluator(run={"seed": 0}, dataset="imagenet")


def test_scaled_schedule_keeps_the_papers_shares():
    assert parse_schedule("paper:178").steps == parse_schedule("paper").steps
    s = parse_schedule("paper:290", 1)
    assert s.planned == 290 and [e for e, _ in s.steps] == [
        e for e, _ in parse_schedule("paper").steps
    ]
    assert s.steps[0][1] == round(290 * 95 / 178)
    with pytest.raises(ConfigError, match="paper:290"):
        parse_schedule("paper:x")


# ---------------------------------------------------------------------------- NSC's mutations
@settings(max_examples=150, deadline=None)
@given(block=blocks(max_layers=8), seed=st.integers(0, 10_000))
def test_nsc_mutation_is_valid_and_never_the_parent(block, seed):
    space = NSCSpace(max_layers=8)
    child = space.mutate(block, random.Random(seed))
    assert Block.parse(child.to_list(), max_layers=8) == child and child.key != block.key


def test_nsc_mutation_adds_and_removes_layers():
    space, rng = NSCSpace(max_layers=10), random.Random(1)
    parent = Block.parse([[1, 1, 3, 0, 0], [2, 1, 5, 1, 0], [3, 5, 0, 1, 2]])
    lengths = {len(space.mutate(parent, rng)) for _ in range(300)}
    assert {2, 3, 4} <= lengths  # removed, changed, added
    assert all(len(space.mutate(space.sample(rng), rng)) <= 10 for _ in range(300))


# ---------------------------------------------------------------------------- searches
@pytest.mark.parametrize("agent", ["qlearning", "qlearning_paper", "random", "evolution", "tpe"])
def test_every_agent_searches_nb201(tmp_path, agent):
    Search(compose_search(*SMALL, f"agent={agent}"), tmp_path).run()
    best = json.loads((tmp_path / "best_block.json").read_text())
    cell = Cell.parse(best["nsc"])
    assert (
        best["nb201"] == cell.as_params() and best["arch"] == cell.arch and best["key"] == cell.key
    )
    assert best["evaluations"] == 3  # re-evaluated: mean of three draws
    assert (tmp_path / "best_block.png").exists() and not (tmp_path / "best_network.png").exists()
    con = sqlite3.connect(tmp_path / "search.db")
    eps = con.execute("SELECT count(*), sum(cost > 0) FROM episodes WHERE status = 'ok'").fetchone()
    assert eps == (40, 40)


@pytest.mark.parametrize("dataset", ["cifar100", "imagenet16"])
def test_search_py_runs_nb201_on_the_held_out_data_sets(tmp_path, dataset):
    done = subprocess.run(
        search_argv(tmp_path / "run", *SMALL, f"evaluator.dataset={dataset}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    best = json.loads((tmp_path / "run" / "best_block.json").read_text())
    assert 0.2 < best["reward"] < 0.8 and "nb201" in best


def test_evolution_evaluates_a_known_child_again_as_a_fresh_draw(tmp_path):
    # A population of 2 over 60 episodes: children repeat their parents' cells often.
    Search(
        compose_search(
            *SMALL, "agent=evolution", "agent.params.population=2", "agent.params.sample=2"
        ),
        tmp_path,
    ).run()
    con = sqlite3.connect(tmp_path / "search.db")
    fresh = con.execute(
        "SELECT key, repeat, seed, after_episode FROM reevaluations WHERE round = -1"
    ).fetchall()
    assert fresh, "no known child was sampled"
    assert len({(k, r) for k, r, _, _ in fresh}) == len(fresh)  # each a distinct repeat of its cell
    for key, _, seed, episode in fresh:
        row = con.execute("SELECT key, reused FROM episodes WHERE id = ?", (episode,)).fetchone()
        assert row == (key, 1) and seed != 0
    # The agent learned the fresh draw, not the stored first result: the episode holds it.
    reused = con.execute("SELECT count(*) FROM episodes WHERE reused = 1").fetchone()[0]
    assert reused == len(fresh)


def test_agents_refuse_nothing_and_walk_both_spaces():
    for name, cls in AGENTS.items():
        for space in (NSCSpace(max_layers=5), NB201Space()):
            agent = cls(space=space, seed=0)
            for _ in range(12):
                arch = agent.ask(0.5)
                assert space.parse(arch.to_list()) == arch
                agent.tell(arch, random.random())
            state = json.loads(json.dumps(agent.state_dict()))
            assert state["space"]["name"] == space.name, name


AGENT_ARGS = {
    "qlearning_nb201": ["agent.params.replay_size=16"],
    "qlearning_paper": [],
    "evolution": ["agent.params.population=5"],
    "random": [],
    "tpe": [],
}


@pytest.mark.parametrize("agent", list(AGENT_ARGS))
def test_nb201_resume_after_sigkill_matches_the_undisturbed_search(tmp_path, agent):
    argv = [*NB, f"agent={agent}", "agent.epsilon_schedule=paper:200", *AGENT_ARGS[agent]]
    Search(compose_search(*argv), tmp_path / "ref").run()
    run = tmp_path / "killed"
    for kill_after in (60, 130):
        proc = killed_search(kill_after, [f"hydra.run.dir={run}", *argv], commit_every=17)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    done = subprocess.run(search_argv(run, *argv), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    def rows(folder, what):
        con = sqlite3.connect(folder / "search.db")
        return con.execute(what).fetchall()

    ep = "SELECT id, nsc, status, reward, reused FROM episodes ORDER BY id"
    re = "SELECT key, repeat, seed, reward, round FROM reevaluations ORDER BY key, repeat"
    assert rows(run, ep) == rows(tmp_path / "ref", ep)
    assert rows(run, re) == rows(tmp_path / "ref", re)
    assert (
        json.loads((run / "best_block.json").read_text())["key"]
        == json.loads((tmp_path / "ref" / "best_block.json").read_text())["key"]
    )


def test_report_and_comparison_serve_nb201_runs(tmp_path):
    import sys

    for agent in ("qlearning", "random"):
        Search(compose_search(*SMALL, f"agent={agent}"), tmp_path / agent).run()
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(tmp_path / "qlearning"), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    best = json.loads((tmp_path / "qlearning" / "best_block.json").read_text())
    assert Cell.parse(best["nsc"]).compact() in text  # the cell named in its own short form
    assert "<svg" in text and "The best block's network" not in text  # NB201's network is fixed
    both = subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn.report",
            str(tmp_path / "qlearning"),
            str(tmp_path / "random"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert both.returncode == 0, both.stderr


def test_a_block_sampled_again_and_again_leads_by_its_mean_not_its_count():
    """Evolution's fresh draws can give a mutation attractor dozens of evaluations; the
    returned block is still the best mean among blocks evaluated as often as re-evaluation's
    choices (3 here), never the most evaluated one."""
    from blockqnn.search.ranking import ranked

    def row(i, key, reward, **extra):
        return {
            "id": i,
            "key": key,
            "nsc": "[]",
            "status": "ok",
            "reward": reward,
            "reused": 0,
            **extra,
        }

    episodes = [row(0, "attractor", 0.5), row(1, "good", 0.7), row(2, "lucky", 0.9)]
    reevaluations = [
        {**row(10 + r, "attractor", 0.5), "repeat": r, "round": -1} for r in range(1, 12)
    ] + [{**row(30 + r, "good", 0.7), "repeat": r, "round": 0} for r in (1, 2)]
    top = ranked(episodes, reevaluations)
    assert [e["key"] for e in top] == ["good", "attractor", "lucky"]
    assert top[0]["evaluations"] == 3 and top[1]["evaluations"] == 12
