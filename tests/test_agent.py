"""Agents: schedules, Q-learning on a synthetic reward over the real NSC space, state
round-trips, validity of every sample."""

import collections
import json
import random
import statistics

import pytest

from blockqnn.agent import AGENTS, QLearningAgent, parse_schedule
from blockqnn.agent.qlearning import START, actions_at
from blockqnn.errors import ConfigError
from blockqnn.space.nsc import Block
from tests.helpers import assert_same_continuation, save_checkpoint

MAX_LAYERS = 4


def chain_reward(block: Block) -> float:
    """Known optimum 1.0: a chain of MAX_LAYERS 3x3 convs, each fed by the previous layer."""
    m = 0
    for la in block.body:
        if la.type == 1 and la.kernel == 3 and la.pred1 == la.index - 1:
            m += 1
        else:
            break
    return 0.5 + 0.5 * m / MAX_LAYERS - 0.02 * (len(block) - m)


def run(agent, schedule, batch=10):
    s = parse_schedule(schedule)
    best = -1.0
    for ep in range(s.episodes(batch)):
        b = agent.ask(s.epsilon_at(ep, batch))
        r = chain_reward(b)
        agent.tell(b, r)
        best = max(best, r)
    return best


def test_paper_schedule():
    s = parse_schedule("paper")
    assert s.iterations == 178 and s.episodes(64) == 11392
    assert s.epsilon_at(0, 64) == 1.0 and s.epsilon_at(95 * 64 - 1, 64) == 1.0
    assert s.epsilon_at(95 * 64, 64) == 0.9
    assert s.epsilon_at(11391, 64) == 0.1
    assert [e for e, _ in s.steps] == [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]


def test_named_and_explicit_schedules():
    assert parse_schedule("short").iterations == 10
    lin = parse_schedule("linear")
    assert lin.steps[0][0] == 1.0 and lin.steps[-1][0] == pytest.approx(0.1)
    assert parse_schedule([[1.0, 2], [0.5, 3]]).steps == ((1.0, 2), (0.5, 3))


@pytest.mark.parametrize(
    "bad,msg",
    [
        ("fast", "not a known schedule"),
        ([], "empty"),
        ([[1.5, 3]], "outside [0, 1]"),
        ([[-0.1, 3]], "outside [0, 1]"),
        ([[0.5, 0]], "positive integer"),
        ([[0.5, 2.5]], "positive integer"),
        ([[0.5]], "not an [epsilon, iterations] pair"),
    ],
)
def test_bad_schedules_are_refused_with_valid_names(bad, msg):
    with pytest.raises(ConfigError) as info:
        parse_schedule(bad)
    assert msg in str(info.value)
    assert "paper, short, linear" in str(info.value)


def test_q_update_by_hand():
    """One result, one replay: the last step moves to r_T, the others to r_T/T + max Q."""
    agent = QLearningAgent(max_layers=4, seed=0, learning_rate=0.5, q_init=0.5, replay_size=1)
    block = Block.parse([[1, 1, 3, 0, 0], [2, 1, 3, 1, 0]])  # T = 3 steps (Terminal included)
    agent.tell(block, 0.9)
    l1, l2, end = (tuple(la) for la in block.layers)
    assert agent.q_value(l2, end) == pytest.approx(0.5 * 0.5 + 0.5 * 0.9)
    # s=l1, a=l2: target 0.3 + max Q(l2, .) = 0.3 + 0.7 (the updated terminal value)
    assert agent.q_value(l1, l2) == pytest.approx(0.25 + 0.5 * (0.3 + 0.7))
    # s=START, a=l1: target 0.3 + max Q(l1, .) = 0.3 + 0.75
    assert agent.q_value(START, l1) == pytest.approx(0.25 + 0.5 * (0.3 + 0.75))


def test_greedy_ties_are_broken_at_random():
    """Every branch of the greedy choice (bugs: the first of the tied actions always taken, an
    action below the row's maximum taken, visited ties forgotten after an update)."""
    firsts = {QLearningAgent(max_layers=3, seed=s).ask(0.0).layers[0] for s in range(40)}
    assert len(firsts) > 3  # an unvisited row: all Q equal, greedy picks vary with the seed

    a1, a2, a3 = (1, 1, 3, 0, 0), (1, 1, 5, 0, 0), (1, 2, 3, 0, 0)

    def agent_with(start_row: dict, q_init: float) -> QLearningAgent:
        agent = QLearningAgent(max_layers=3, seed=0)
        state = agent.state_dict()
        state["hyper"][2] = q_init
        state["q"] = [[list(START), [[list(a), v] for a, v in sorted(start_row.items())]]]
        agent.load_state_dict(state)
        return agent

    def greedy_firsts(agent: QLearningAgent, n: int = 200) -> collections.Counter:
        return collections.Counter(tuple(agent.ask(0.0).layers[0]) for _ in range(n))

    # visited actions above q_init: only the two tied at the maximum, each about half the time
    agent = agent_with({a1: 0.7, a2: 0.7, a3: 0.5}, q_init=0.0)
    seen = greedy_firsts(agent)
    assert set(seen) == {a1, a2} and min(seen.values()) > 60
    # an update that lifts a3 above them: it alone is greedy (the cached ties are replaced)
    agent.tell(Block.parse([list(a3), [2, 7, 0, 0, 0]]), 5.0)
    assert agent.q_value(START, a3) > 0.7
    assert set(greedy_firsts(agent, 50)) == {a3}
    # q_init equal to the visited maximum: unvisited actions tie with a1 and a2, not with a3
    seen = greedy_firsts(agent_with({a1: 0.7, a2: 0.7, a3: 0.5}, q_init=0.7), 400)
    assert set(seen) == set(actions_at(1, 3)) - {a3}
    # q_init above every visited value: only unvisited actions are greedy (optimism)
    seen = greedy_firsts(agent_with({a1: 0.7, a2: 0.7, a3: 0.5}, q_init=1.0), 400)
    assert set(seen) == set(actions_at(1, 3)) - {a1, a2, a3}


def test_qlearning_finds_the_optimum_and_beats_random():
    """1,000 samples, learning rate 0.1: Q-learning's best is within 0.15 of the optimum
    (1.0) on average over 5 seeds, and above random search's average best."""
    schedule = [[1.0, 20], [0.5, 20], [0.2, 20], [0.05, 40]]
    q = [
        run(QLearningAgent(max_layers=MAX_LAYERS, seed=s, learning_rate=0.1), schedule)
        for s in range(5)
    ]
    r = [run(AGENTS["random"](max_layers=MAX_LAYERS, seed=s), schedule) for s in range(5)]
    assert statistics.mean(q) >= 0.85
    assert statistics.mean(q) > statistics.mean(r)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_state_round_trip_gives_identical_continuation(name):
    a = AGENTS[name](max_layers=8, seed=3)
    rng = random.Random(0)
    for _ in range(25):
        b = a.ask(0.5)
        a.tell(b, rng.random())
    state = json.loads(json.dumps(a.state_dict()))  # plain JSON-able data
    b2 = AGENTS[name](max_layers=8, seed=99)
    b2.load_state_dict(state)
    assert_same_continuation(a, b2, rng)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_incremental_checkpoints_restore_the_same_agent(name):
    a = AGENTS[name](max_layers=8, seed=3)
    rng = random.Random(0)
    saved: dict = {}
    for _ in range(30):  # a checkpoint after every ask and every tell, as the search does
        b = a.ask(0.5)
        save_checkpoint(saved, a.checkpoint())
        a.tell(b, rng.random())
        save_checkpoint(saved, a.checkpoint())
    b2 = AGENTS[name](max_layers=8, seed=99)
    b2.restore(saved["state"], saved.get("parts", {}))
    assert json.dumps(a.state_dict()) == json.dumps(b2.state_dict())
    assert_same_continuation(a, b2, rng)


def test_qlearning_checkpoint_carries_the_new_memory_and_a_snapshot_now_and_then(monkeypatch):
    import blockqnn.agent.qlearning as ql

    a = QLearningAgent(max_layers=23, seed=0, replay_size=8)
    rng = random.Random(1)
    saved: dict = {}
    for _ in range(300):
        a.tell(a.ask(1.0), rng.random())
    save_checkpoint(
        saved, a.checkpoint()
    )  # the first checkpoint: the memory and a snapshot of the table
    assert len(saved["parts"]["memory"]) == 300 and saved["state"]["snapshot_told"] == 300
    assert len(json.loads(saved["parts"]["snapshot"]["q"])) == len(a.q)
    for _ in range(20):  # results after the snapshot: one memory entry each, no table
        a.tell(a.ask(0.5), rng.random())
        small, parts = a.checkpoint()
        assert list(parts) == ["memory"] and list(parts["memory"]) == [str(a.told - 1)]
        assert "q" not in small and "memory" not in small and small["snapshot_told"] == 300
        save_checkpoint(saved, (small, parts))
    assert a.checkpoint()[1] == {"memory": {}}  # nothing changed since
    # Restoring loads the snapshot and replays the 20 results after it: the very same agent.
    b = QLearningAgent(max_layers=23, seed=0)
    b.restore(saved["state"], saved["parts"])
    assert b.q == a.q and b._row_max == a._row_max
    assert json.dumps(a.state_dict()) == json.dumps(b.state_dict())
    assert_same_continuation(a, b, rng)
    # Once replays since the snapshot cost more than SNAPSHOT_MIN_S (and SNAPSHOT_WORK times
    # the last snapshot), the next checkpoint carries a new one.
    monkeypatch.setattr(ql, "SNAPSHOT_MIN_S", 0.0)
    monkeypatch.setattr(ql, "SNAPSHOT_WORK", 0.0)
    a.tell(a.ask(0.5), 0.7)
    small, parts = a.checkpoint()
    assert "snapshot" in parts and small["snapshot_told"] == a.told
    # A full state (an older store's format) restores too, and its next checkpoint snapshots it.
    c = QLearningAgent(max_layers=23, seed=5)
    c.restore(json.loads(json.dumps(a.state_dict())), {})
    assert c.checkpoint()[0]["snapshot_told"] == a.told


def test_qlearning_restores_a_store_saved_entry_by_entry():
    """Stores written before snapshots hold the Q table as one part entry per (state, action)."""
    a = QLearningAgent(max_layers=10, seed=2)
    rng = random.Random(3)
    for _ in range(40):
        a.tell(a.ask(1.0), rng.random())
    small, parts = json.loads(json.dumps(a.checkpoint()))
    del small["snapshot_told"]
    legacy = {
        "memory": parts["memory"],
        "q": {
            json.dumps([list(s), list(act)]): v for s, row in a.q.items() for act, v in row.items()
        },
    }
    b = QLearningAgent(max_layers=10, seed=2)
    b.restore(small, legacy)
    assert b.q == a.q
    assert_same_continuation(a, b, rng)


@pytest.mark.parametrize("name", sorted(AGENTS))
def test_every_sample_is_valid(name):
    a = AGENTS[name](max_layers=23, seed=1)
    for i in range(40):
        b = a.ask(0.5)
        assert Block.parse(b.to_json(), max_layers=23, require_terminal=True) == b
        a.tell(b, 0.5 + 0.01 * (i % 7))


def test_agent_rng_is_independent_of_global_state():
    import numpy as np
    import torch

    def sample(seed):
        random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
        agent = QLearningAgent(max_layers=10, seed=7)
        return [agent.ask(0.5).to_json() for _ in range(5)]

    assert sample(1) == sample(2)


def test_evolution_mutation_changes_one_layer_or_adds_or_removes_one():
    from blockqnn.agent import EvolutionAgent

    agent = EvolutionAgent(max_layers=23, seed=0)
    parent = Block.parse([[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 0, 2], [4, 2, 3, 3, 0]])
    lengths = set()
    for _ in range(200):
        child = agent.mutate(parent)
        assert child.key != parent.key and abs(len(child) - len(parent)) <= 1
        lengths.add(len(child))
        if len(child) == len(parent):  # a type, kernel or input changed: one layer
            assert sum(a != b for a, b in zip(child.body, parent.body)) == 1
    assert lengths == {3, 4, 5}  # the published mutations change a block's length too


def test_type_first_exploration_draws_layer_types_evenly():
    from blockqnn.space.nsc import LayerType

    uniform = QLearningAgent(max_layers=23, seed=0, explore="uniform")
    typed = QLearningAgent(max_layers=23, seed=0, explore="type_first")
    u = [uniform.ask(1.0) for _ in range(300)]
    t = [typed.ask(1.0) for _ in range(300)]
    # Uniform over legal actions: add/concat (many input pairs) dominate and most blocks hit the cap.
    assert sum(len(b.body) == 23 for b in u) > 150
    assert sum(len(b.body) == 23 for b in t) < 30
    counts = {k: sum(la.type == k for b in t for la in b.body) for k in (1, 2, 3, 4, 5, 6)}
    assert max(counts.values()) < 2 * min(counts.values())  # six computing types about evenly
    two_input = (LayerType.ADD, LayerType.CONCAT)
    assert sum(la.type in two_input for b in u for la in b.body) > 0.45 * sum(
        len(b.body) for b in u
    )
    state = typed.state_dict()
    again = QLearningAgent(max_layers=23, seed=5, explore="uniform")
    again.load_state_dict(state)  # the saved agent's exploration, not the constructor's
    assert again.explore == "type_first" and again.ask(1.0) == typed.ask(1.0)


@pytest.mark.parametrize("replacement", [True, False])
def test_qlearning_replays_with_or_without_replacement(replacement):
    a = QLearningAgent(max_layers=6, seed=1, replay_size=8, replay_replacement=replacement)
    seen: list = []
    original = a._replay
    a._replay = lambda steps, reward: (seen.append(steps), original(steps, reward))
    rng = random.Random(0)
    for n in range(1, 13):
        seen.clear()
        a.tell(a.ask(1.0), rng.random())
        drawn = [a._replays.index(next(r for r in a._replays if r[0] is s)) for s in seen]
        if replacement:
            assert len(drawn) == 8
        else:
            assert len(drawn) == min(n, 8) and len(set(drawn)) == len(drawn)
    b = QLearningAgent(max_layers=6, seed=9)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.replay_replacement == replacement


def test_count_bonus_steers_greedy_steps_to_less_tried_actions():
    """Paper constants (lr 0.01, q_init 0.5): one result lifts its first action's Q above
    q_init (to about 0.65: 64 replays toward the shaped target 0.8 / 3 + 0.55), so the plain
    greedy step always repeats it; with the count bonus c = 1 an untried action (q_init + c =
    1.5) beats the tried one (Q + c / sqrt(2), about 1.36), and the counts are the told
    results'."""
    block = Block.parse([[1, 1, 3, 0, 0], [2, 1, 3, 1, 0]])
    first = block.layers[0]

    def after_one(bonus: float) -> QLearningAgent:
        agent = QLearningAgent(
            max_layers=4, seed=0, learning_rate=0.01, q_init=0.5, count_bonus=bonus
        )
        agent.tell(block, 0.8)
        return agent

    plain = after_one(0.0)
    assert plain.q_value(START, tuple(first)) > 0.5
    assert {plain.ask(0.0).layers[0] for _ in range(30)} == {first}
    bonus = after_one(1.0)
    firsts = collections.Counter(bonus.ask(0.0).layers[0] for _ in range(200))
    assert first not in firsts and len(firsts) > 3  # untried actions, ties drawn at random
    assert bonus._visits[START] == {tuple(first): 1}
    # a tried action with a high enough Q still wins over the bonus of untried ones
    for _ in range(3):
        bonus.tell(block, 0.8)
    rich = QLearningAgent(max_layers=4, seed=0, learning_rate=0.5, q_init=0.5, count_bonus=1.0)
    rich.tell(block, 5.0)
    assert {rich.ask(0.0).layers[0] for _ in range(20)} == {first}
    assert bonus._visits[START] == {tuple(first): 4}


def test_count_bonus_survives_state_round_trips_and_incremental_restores():
    def searched() -> tuple[QLearningAgent, dict]:
        rng = random.Random(0)
        a = QLearningAgent(max_layers=8, seed=3, learning_rate=0.01, q_init=0.5, count_bonus=0.1)
        saved: dict = {}
        for _ in range(30):
            b = a.ask(0.3)
            save_checkpoint(saved, a.checkpoint())
            a.tell(b, rng.random())
            save_checkpoint(saved, a.checkpoint())
        return a, saved

    a, saved = searched()
    full = QLearningAgent(max_layers=8, seed=99)
    full.load_state_dict(json.loads(json.dumps(a.state_dict())))
    part = QLearningAgent(max_layers=8, seed=99)
    part.restore(saved["state"], saved.get("parts", {}))
    for other in (full, part):
        assert other.count_bonus == 0.1 and other._visits == a._visits
    assert_same_continuation(a, full, random.Random(1))
    assert_same_continuation(searched()[0], part, random.Random(1))
