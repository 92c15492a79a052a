"""bench/proxy_fidelity.py's scoring and its pre-registered decision rule, on numbers worked out
by hand (the study's own trainings are in bench/results/fidelity; this checks what is computed
from them): Kendall tau over all blocks and within the final top half, recall of the top 8,
the rule that chose experiment=bench_proxy, and the searched blocks' ranks."""

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import proxy_fidelity as pf  # noqa: E402

FINAL = {i: 0.80 + 0.004 * i for i in range(20)}  # block 19 is the best


def test_metrics_of_a_perfect_a_reversed_and_a_top_blind_proxy():
    perfect = pf.metrics(dict(FINAL), FINAL, 2.0)
    assert perfect["blocks"] == 20
    assert perfect["tau_all"] == 1.0 and perfect["tau_top_half"] == 1.0
    assert perfect["recall_top8"] == 1.0 and perfect["tau_per_cpu_s"] == 0.5
    reversed_ = pf.metrics({i: -v for i, v in FINAL.items()}, FINAL, None)
    assert reversed_["tau_all"] == -1.0 and reversed_["recall_top8"] == 0.0
    assert reversed_["cpu_s_per_block"] is None and "tau_per_cpu_s" not in reversed_
    # Orders the bottom half right and the top half backwards: good over all, wrong at the top.
    blind = {i: (v if i < 10 else 2 - v) for i, v in FINAL.items()}
    m = pf.metrics(blind, FINAL, 1.0)
    assert m["tau_top_half"] == -1.0 and m["tau_all"] > 0.4
    assert m["recall_top8"] == 0.75  # its top 8 (blocks 10-17) holds 6 of the final top 8
    # Blocks a proxy has no finite score for are left out, not ranked last.
    partial = pf.metrics({i: v for i, v in FINAL.items() if i != 3} | {3: float("nan")}, FINAL, 1)
    assert partial["blocks"] == 19 and partial["tau_all"] == 1.0
    lo, hi = perfect["tau_all_ci95"]
    assert lo <= 1.0 <= hi


def _row(tau_all, top, ci, cpu):
    return {
        "tau_all": tau_all,
        "tau_top_half": top,
        "tau_top_half_ci95": ci,
        "cpu_s_per_block": cpu,
    }


def test_the_decision_rule_takes_the_cheapest_of_the_ties_among_affordable_proxies():
    proxies = {
        "bench:acc": _row(0.05, 0.0, [-0.3, 0.3], 2.0),  # today's proxy: the cost unit
        "baseline:flops_budget": _row(0.10, 0.0, [-0.3, 0.3], 0.0),
        "baseline:surrogate": _row(None, None, None, 0.0),
        "expensive:acc": _row(0.9, 0.9, [0.8, 1.0], 8.1),  # over 4x today's proxy
        "below_floor:acc": _row(0.10, 0.95, [0.9, 1.0], 1.0),  # no better than FLOPs
        "strong:acc": _row(0.5, 0.60, [0.40, 0.80], 6.0),  # the best top half
        "cheap:tse": _row(0.4, 0.45, [0.20, 0.65], 2.0),  # ties with it, cheaper
        "loose:acc": _row(0.3, 0.30, [0.10, 0.50], 1.0),  # its interval misses 0.60
        "cheap:tse_reward_mu0.5_rho2.0": _row(0.47, None, None, 2.0),
        "cheap:tse_reward_mu1.0_rho8.0": _row(0.20, None, None, 2.0),
        "cheap:reward_mu4.0_rho4.0": _row(0.99, None, None, 2.0),  # the accuracy's grid
    }
    d = pf.choose({"proxies": proxies})
    assert d["best_top_half"] == "strong:acc"
    assert d["ties"] == ["cheap:tse", "strong:acc"]
    assert d["chosen"] == "cheap:tse"
    assert d["reward"] == "cheap:tse_reward_mu0.5_rho2.0"  # its own signal's grid
    assert d["baseline_tau_to_beat"] == 0.10 and d["reaches_0.3"] is True
    # Nothing beats the baselines: no decision rather than a pick of the least bad.
    worse = {k: v for k, v in proxies.items() if k.startswith(("bench:", "baseline:"))}
    assert pf.choose({"proxies": worse}) == {}


@pytest.mark.parametrize("searched", [[100, 101], [101]])
def test_the_searched_blocks_ranks(searched):
    final = dict(FINAL) | {100: 0.90, 101: 0.799}  # the best and the worst of all
    proxy = {i: -v for i, v in final.items()}  # a proxy that ranks everything backwards
    ranks = pf._searched_ranks({i: final[i] for i in [*FINAL, *searched]}, {"p:acc": (proxy, 1)})
    expected = {100: 1, 101: 20 + len(searched)}  # from the top, among the scored blocks
    mean = sum(expected[i] for i in searched) / len(searched)
    assert ranks["final"] == {"mean_rank": mean, "of": 20 + len(searched)}
    flipped = {100: 20 + len(searched), 101: 1}
    assert ranks["p:acc"]["mean_rank"] == sum(flipped[i] for i in searched) / len(searched)
