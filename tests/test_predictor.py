"""The faster version: gating, the stored predicted flag, resume with the predictor."""

import json
import random

import pytest

from blockqnn.predictor import RewardPredictor, features
from blockqnn.search.loop import Search
from blockqnn.search.setup import fingerprint
from blockqnn.search.signals import SearchInterrupted
from blockqnn.search.store import SearchStore
from blockqnn.space.nsc import Block, random_block
from tests.conftest import compose_search as cfg_for

BASE = [
    "recipe.epochs=1",
    "network.width=8",
    "space.max_layers=5",
    "agent.batch_size=8",
    "agent.epsilon_schedule=[[1.0,4],[0.3,3]]",
    "logger=none",
]
PRED = ["predictor=forest", "search.predictor.min_measured=8", "search.predictor.refit_every=4"]


def synthetic(nsc, repeat=0):
    """A deterministic reward with structure a forest can learn (convs good, pools bad)."""
    b = Block.parse(nsc)
    convs = sum(la.type == 1 for la in b.body)
    pools = sum(la.type in (2, 3) for la in b.body)
    return {
        "status": "ok",
        "reward": 0.5 + 0.08 * convs - 0.05 * pools,
        "accuracy": 0.9,
        "flops": 1000,
        "params": 10,
        "density": b.density,
        "epochs": 1,
        "restarts": 0,
        "wall_time": 0.0,
        "error": None,
    }


def test_gating_trains_promising_and_uncertain_blocks_only():
    rng = random.Random(0)
    measured = []
    for i in range(40):
        b = random_block(rng, 6)
        measured.append((i, b.to_list(), synthetic(b.to_list())["reward"]))
    p = RewardPredictor(min_measured=50, top_fraction=0.25, explore_fraction=0.0)
    p.maybe_refit(measured)
    assert p.model is None and p.gate(random_block(rng, 6))[0]  # not ready: everything is trained
    p.min_measured = 20
    p.maybe_refit(measured)
    assert p.model is not None and len(p.fitted_on) == 40
    good = Block.parse([[i, 1, 3, i - 1, 0] for i in range(1, 7)])  # six convs: the best reward
    bad = Block.parse([[i, 2 + i % 2, 3, i - 1, 0] for i in range(1, 7)])  # six pools: the worst
    assert p.gate(good)[0] is True and p.gate(bad)[0] is False
    assert p.gate(good)[1] > p.gate(bad)[1]
    assert features(good).shape == features(bad).shape
    # The uncertainty branch: with explore_fraction on, a block predicted below the reward cut
    # is still trained when the trees disagree about it (its spread is in the top fraction).
    p.explore_fraction = 0.5
    p.fit(measured)
    pool = [random_block(rng, 6) for _ in range(300)]
    gated = [(b, *p.gate(b)) for b in pool]
    explored = [g for g in gated if g[1] and g[2] < p.reward_cut]
    assert explored and all(g[3] >= p.std_cut for g in explored)
    skipped = [g for g in gated if not g[1]]
    assert skipped and all(g[2] < p.reward_cut and g[3] < p.std_cut for g in skipped)


def run_search(folder, evaluate=synthetic, *extra):
    plain = "plain" in extra
    extra = tuple(e for e in extra if e != "plain")
    cfg = cfg_for(*BASE, *extra) if plain else cfg_for(*BASE, *PRED, *extra)
    Search(cfg, folder, evaluator=evaluate).run()
    return cfg


def rows(folder, cfg):
    store = SearchStore(folder / "search.db", fingerprint(cfg))
    out = store.episodes()
    store.close()
    return out


def test_predicted_episodes_are_flagged_and_never_ranked(tmp_path):
    cfg = run_search(tmp_path)
    eps = rows(tmp_path, cfg)
    assert len(eps) == 56
    predicted = [e for e in eps if e["predicted"]]
    assert predicted and all(e["accuracy"] is None and "predicted" in e["error"] for e in predicted)
    assert all(e["id"] >= 8 for e in predicted)  # none before min_measured measurements
    best = json.loads((tmp_path / "best_block.json").read_text())
    top = json.loads((tmp_path / "topk.json").read_text())
    measured_keys = {e["key"] for e in eps if not e["predicted"]}
    assert best["key"] in measured_keys and all(t["key"] in measured_keys for t in top)
    assert best["reward"] == pytest.approx(max(e["reward"] for e in eps if not e["predicted"]))


def with_timeouts(nsc, repeat=0):
    """`synthetic`, except that a block with a 3x3 max pool times out (reward 0)."""
    if any(la.type == 2 and la.kernel == 3 for la in Block.parse(nsc).body):
        return {**synthetic(nsc), "status": "timeout", "reward": 0.0, "accuracy": None}
    return synthetic(nsc)


class Killer:
    """Evaluates like ``evaluate`` and 'kills' the search at the n-th training."""

    def __init__(self, n, evaluate=synthetic):
        self.n, self.calls, self.evaluate = n, 0, evaluate

    def __call__(self, nsc, repeat=0):
        self.calls += 1
        if self.calls == self.n:
            raise SearchInterrupted()
        return self.evaluate(nsc, repeat)


@pytest.mark.parametrize(
    "with_predictor,evaluate",
    [(True, synthetic), (False, synthetic), (True, with_timeouts)],
    ids=["predictor", "plain", "predictor-with-timeouts"],
)
def test_resume_with_predictor_matches_uninterrupted(tmp_path, with_predictor, evaluate):
    """Timed-out results never train the forest, in a run or after a resume (before: they did
    during a run only, so a resumed search gated and sampled differently)."""
    extra = () if with_predictor else ("plain",)
    ref = tmp_path / "ref"
    cfg = run_search(ref, evaluate, *extra)
    reference = [(e["nsc"], e["reward"], e["predicted"]) for e in rows(ref, cfg)]
    run = tmp_path / "run"
    for n in (3, 7, 4):  # a kill at the n-th training of each run
        with pytest.raises(KeyboardInterrupt):
            run_search(run, Killer(n, evaluate), *extra)
    run_search(run, evaluate, *extra)
    resumed = [(e["nsc"], e["reward"], e["predicted"]) for e in rows(run, cfg)]
    assert resumed == reference


def test_predicted_rewards_are_refreshed_in_the_agents_memory_after_each_refit(tmp_path):
    cfg = cfg_for(*BASE, *PRED)
    search = Search(cfg, tmp_path, evaluator=synthetic)
    search.run()
    eps = {e["id"]: e for e in rows(tmp_path, cfg)}
    predicted = {i: e for i, e in eps.items() if e["predicted"]}
    assert predicted and all(e["told"] is not None for e in predicted.values())
    assert len(search.predictor.fitted_on) > cfg.search.predictor.min_measured  # refitted since
    memory = search.agent.memory
    blocks = [Block.parse(e["nsc"]) for e in predicted.values()]
    latest = search.predictor.predict_many(blocks)
    # Every predicted result in the agent's memory holds the last forest's estimate ...
    assert [memory[e["told"]][1] for e in predicted.values()] == pytest.approx(
        list(latest), abs=1e-12
    )
    # ... not the one it was sampled with (stored with the episode), for those refitted since.
    assert any(abs(memory[e["told"]][1] - e["reward"]) > 1e-9 for e in predicted.values())
    # Measured results keep their measured reward (a re-evaluated one: its mean, equal here).
    assert all(
        memory[e["told"]][1] == pytest.approx(e["reward"], abs=1e-12)
        for e in eps.values()
        if not e["predicted"]
    )


def test_qlearning_relabel_survives_checkpoint_and_restore():
    from blockqnn.agent.qlearning import QLearningAgent
    from tests.helpers import assert_same_continuation, save_checkpoint

    a = QLearningAgent(max_layers=8, seed=4)
    rng = random.Random(5)
    saved: dict = {}
    for i in range(60):
        a.tell(a.ask(0.8), rng.random())
        if i % 7 == 0:
            save_checkpoint(saved, a.checkpoint())
        if i in (20, 41):
            a.relabel({j: rng.random() for j in range(0, i, 3)})
    save_checkpoint(saved, a.checkpoint())
    b = QLearningAgent(max_layers=8, seed=4)
    b.restore(saved["state"], saved["parts"])
    assert b.memory == a.memory and b.q == a.q
    assert_same_continuation(a, b, rng)


def test_the_forest_learns_from_the_same_episodes_in_a_run_and_after_a_resume(tmp_path):
    """One predicate for "measured": what the forest learned from during a run is what a resume
    reads back from the store (before, failed and timed-out results entered it during a run
    only, so a resumed search could gate and sample differently)."""
    cfg = cfg_for(*BASE, *PRED)
    search = Search(cfg, tmp_path, evaluator=with_timeouts)
    search.run()
    store = SearchStore(tmp_path / "search.db", fingerprint(cfg))
    try:
        stored = store.measured()
        statuses = {e["status"] for e in store.episodes()}
    finally:
        store.close()
    assert "timeout" in statuses  # the case this is about happened
    assert [m[0] for m in search.measured] == [m[0] for m in stored]
