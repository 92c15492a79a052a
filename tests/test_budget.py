"""A parameter (or FLOPs) budget: network.params chooses each block's stage widths, with one rule
for search.py and train.py, within 3% of the budget."""

import json
import random
import sqlite3

import pytest
from omegaconf import OmegaConf

from blockqnn.errors import ConfigError
from blockqnn.space.budget import OverBudget, ParameterFree, fit_widths, resolve
from blockqnn.space.cost import block_params, count_flops, count_params, network_cost
from blockqnn.space.network import BlockModule, build_network
from blockqnn.space.nsc import Block, LayerType, random_block
from blockqnn.space.presets import PRESETS, preset
from tests.conftest import compose_search, compose_train, run_entry

SPEC = dict(kind="cifar", num_classes=10, in_channels=1, input_size=14, blocks_per_stage=1)


@pytest.mark.parametrize("target", [20_000, 60_000, 250_000])
def test_every_preset_and_random_blocks_land_within_3_percent(target):
    rng = random.Random(target)
    blocks = [preset(n) for n in PRESETS] + [random_block(rng, 10) for _ in range(40)]
    for block in blocks:
        fit = fit_widths(block, "params", target, **SPEC)
        net = build_network(block, params=target, **SPEC)
        assert count_params(net) == fit.params  # the count the rule chose is the network built
        assert net.spec.stage_widths == fit.widths
        if fit.widths[0] < 256:  # not a block that stays under the budget at any width
            assert abs(fit.params - target) <= 0.03 * target, (block.to_list(), fit)


def test_one_integer_width_misses_where_stage_widths_do_not():
    """At ~60k parameters one step of F moves the network by far more than 3%: the stage widths
    are the knob that makes the budget reachable."""
    block = preset("resnet_basic")
    counts = [network_cost(block, width=f, stages=3, **SPEC)[1] for f in range(4, 40)]
    target = 60_000
    assert min(abs(c - target) for c in counts) > 0.03 * target
    fit = fit_widths(block, "params", target, **SPEC)
    assert abs(fit.gap) <= 0.01


def test_flops_budget_and_the_limits():
    block = preset("plain")
    fit = fit_widths(block, "flops", 3_000_000, **SPEC)
    net = build_network(block, flops=3_000_000, **SPEC)
    assert count_flops(net, (1, 14, 14)) == fit.flops
    assert abs(fit.gap) <= 0.03
    # Under the budget at any width (no convolution): built at max_width, its smaller count shown.
    pools = [[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]
    wide = fit_widths(pools, "params", 10**7, max_width=32, **SPEC)
    assert wide.widths[0] == 32 and wide.gap < -0.03
    with pytest.raises(OverBudget, match="over the budget"):
        fit_widths(preset("densenet_like"), "params", 100, **SPEC)
    with pytest.raises(ConfigError, match="not both"):
        resolve(block, {**SPEC, "stages": 3, "width": 8, "params": 10, "flops": 10})


def test_the_configs_hold_the_rules_defaults():
    import inspect

    defaults = inspect.signature(fit_widths).parameters
    for cfg in (compose_search(), compose_train()):
        assert cfg.network.params is None and cfg.network.flops is None
        assert cfg.network.max_width == defaults["max_width"].default
        assert cfg.network.budget_tolerance == defaults["tolerance"].default
    # Both train blocks without parameters at a budget unless told to refuse them.
    assert compose_search().network.parameter_free == "allow"
    assert compose_train().network.parameter_free == "allow"


def _search_at_15k(folder, *overrides: str) -> sqlite3.Connection:
    """search.py (smoke recipe, CSV logger, no re-evaluation) at network.params=15000: its
    store."""
    code, err = run_entry(
        "search",
        folder,
        "debug=smoke",
        "logger=csv",
        "network.params=15000",
        "search.reevaluate.top=0",
        *overrides,
    )
    assert code == 0, err
    return sqlite3.connect(folder / "search.db")


POOLS = [[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]  # one 3x3 max pool: no parameters


def test_block_params_counts_the_blocks_own_layers():
    """block_params is what a built block holds (input already at its width): convolutions,
    concatenations' and a multi-leaf output's 1x1 reductions; 0 for pooling, identity and add."""
    rng = random.Random(7)
    blocks = [preset(n) for n in PRESETS] + [random_block(rng, 10) for _ in range(80)]
    blocks += [Block.parse(b) for b in (
        POOLS,
        [[1, 2, 3, 0, 0], [2, 4, 0, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]],  # pool, id, add
        [[1, 2, 3, 0, 0], [2, 3, 1, 0, 0], [3, 7, 0, 0, 0]],  # two leaves: a 1x1 reduction
    )]  # fmt: skip
    free = 0
    for block in blocks:
        assert block_params(block, 7) == count_params(BlockModule(block, 7, 7)), block.to_list()
        has = any(layer.type in (LayerType.CONV, LayerType.CONCAT) for layer in block.body)
        assert (block_params(block) > 0) == (has or len(block.leaves) > 1)
        free += block_params(block) == 0
    assert free >= 2


def test_a_parameter_free_block_is_refused_at_a_budget_unless_allowed():
    spec = {**SPEC, "stages": 3, "width": 8, "params": 50_000, "parameter_free": "refuse"}
    assert resolve(POOLS, {**spec, "parameter_free": None})[1] is not None  # a library call
    with pytest.raises(ParameterFree, match="hold no parameters.*parameter_free=allow"):
        resolve(POOLS, spec)
    with pytest.raises(ParameterFree):
        resolve(POOLS, {**spec, "params": None, "flops": 10**6})  # a FLOPs budget as well
    concrete, fit = resolve(POOLS, {**spec, "parameter_free": "allow"})
    assert fit is not None and "parameter_free" not in concrete
    assert resolve(POOLS, {**SPEC, "stages": 3, "width": 8})[1] is None  # no budget, no rule
    assert resolve(preset("plain"), spec)[1].within
    with pytest.raises(ConfigError, match="parameter_free='sometimes'"):
        resolve(POOLS, {**spec, "parameter_free": "sometimes"})
    with pytest.raises(ConfigError, match="parameter_free"):
        from blockqnn.config import SearchConfig, check

        check(compose_search("network.parameter_free=sometimes"), SearchConfig)


def test_a_search_at_a_budget_records_parameter_free_blocks_invalid(tmp_path):
    """One-layer blocks (most of them pools or an identity): those without parameters are
    invalid candidates that never train under ``network.parameter_free=refuse``, the others
    train at the budget; the search returns a block with a convolution."""
    db = _search_at_15k(
        tmp_path / "s",
        "agent=random",
        "space.max_layers=1",
        "search.max_episodes=8",
        "network.parameter_free=refuse",
    )
    rows = db.execute("SELECT nsc, status, error, epochs FROM episodes").fetchall()
    free = [r for r in rows if block_params(json.loads(r[0])) == 0]
    assert free and len(free) < len(rows)
    assert all(s == "invalid" and "hold no parameters" in e and n == 0 for _, s, e, n in free)
    assert all(s == "ok" for b, s, _, _ in rows if block_params(json.loads(b)) > 0)
    best = json.loads((tmp_path / "s" / "best_block.json").read_text())
    assert block_params(best["nsc"]) > 0


def test_search_and_train_choose_the_same_widths(tmp_path):
    """search.py records each candidate's widths (store, CSV, best_block.json); train.py on the
    search's best block builds the network with the same widths and about the same count."""
    db = _search_at_15k(tmp_path / "s", "search.max_episodes=3")
    rows = db.execute("SELECT params, widths, status FROM episodes WHERE status = 'ok'").fetchall()
    assert rows and all(w for _, w, _ in rows)
    for params, _, _ in rows:
        assert abs(params - 15000) <= 450
    best = json.loads((tmp_path / "s" / "best_block.json").read_text())
    assert best["widths"] and abs(best["params"] - 15000) <= 450
    assert "/".join(map(str, best["widths"])) in (tmp_path / "s" / "episodes.csv").read_text()
    code, err = run_entry(
        "train",
        tmp_path / "t",
        "debug=smoke_train",
        f"block={tmp_path / 's' / 'best_block.json'}",
        "network.params=15000",
        "train.test=false",
        "train.export=false",
        "logger=none",
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["widths"] == best["widths"] and metrics["params"] == best["params"]
    assert metrics["test_acc"] is None  # train.test=false never reads the test split


def test_a_budget_with_a_table_or_too_small_is_refused(tmp_path):
    code, err = run_entry(
        "search", tmp_path / "a", "evaluator=surrogate", "network.params=50000", "logger=none"
    )
    assert code != 0 and "scores fixed networks" in err
    code, err = run_entry("search", tmp_path / "b", "network.params=50", "logger=none")
    assert code != 0 and "reward.flops_reference" in err and "over the budget" in err
    assert not (tmp_path / "b" / "search.db").exists()
    cfg = compose_search("network.params=10", "network.flops=10")
    with pytest.raises(ConfigError, match="not both"):
        from blockqnn.config import SearchConfig, check

        check(cfg, SearchConfig)
    assert OmegaConf.select(cfg, "network.params") == 10
