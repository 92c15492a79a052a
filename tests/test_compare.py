"""The comparison of several searches: curves, grouping, paired tests and the HTML report of a
real Hydra multirun (surrogate evaluator, so it takes seconds)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blockqnn import compare
from blockqnn.analysis import fig_rewards
from tests._browser import assert_renders, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [
    "evaluator=surrogate",
    "logger=none",
    "space.max_layers=6",
    "agent.batch_size=4",
    "agent.epsilon_schedule=[[1.0,2],[0.1,2]]",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep") / "multirun"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            "-m",
            "agent=qlearning,random",
            "seed=0,1",
            *SWEEP,
            f"hydra.sweep.dir={folder}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return folder


def _ep(i, key, reward, status="ok", predicted=0, reused=0, epsilon=1.0):
    return {
        "id": i,
        "key": key,
        "reward": reward,
        "status": status,
        "predicted": predicted,
        "reused": reused,
        "epsilon": epsilon,
    }


def test_curves_count_measured_distinct_blocks_only():
    rows = [
        _ep(0, "a", 0.5),
        _ep(1, "b", 0.9, predicted=1),
        _ep(2, "c", None, status="failed"),
        _ep(3, "a", 0.5, reused=1, epsilon=0.5),
        _ep(4, "d", 0.7, epsilon=0.5),
    ]
    rows += [_ep(5 + i, f"k{i}", 0.1 * i, epsilon=0.5) for i in range(11)]
    c = compare.curves(rows)
    assert c["episodes"] == 16 and c["trained"] == 13 and c["predicted"] == 1
    assert c["best_curve"][:5].tolist() == [
        0.5,
        0.5,
        0.5,
        0.5,
        0.7,
    ]  # the predicted 0.9 never counts
    assert c["top10_curve"][3] == 0.5  # the reused copy of "a" is one block
    assert c["top10_curve"][4] == pytest.approx(0.6)
    ten = sorted([0.5, 0.7] + [0.1 * i for i in range(11)], reverse=True)[:10]
    assert c["top10_curve"][-1] == pytest.approx(np.mean(ten))
    assert list(c["stages"]) == [1.0, 0.5]  # first stage first; predicted rewards are rewards told
    assert c["stages"][1.0] == pytest.approx(0.7)
    s = compare.summarize(rows, grid=4)
    assert s["points"] == [4, 8, 12, 16] and s["best"] == 1.0 and s["first"] == pytest.approx(0.7)


def test_groups_come_from_the_overrides_that_differ(sweep, tmp_path):
    runs = [compare.load(d) for d in compare.find_runs([sweep])]
    assert len(runs) == 4
    groups = compare.group_runs(runs)
    assert {k: sorted(r["seed"] for r in v) for k, v in groups.items()} == {
        "agent=qlearning": [0, 1],
        "agent=random": [0, 1],
    }
    # Without Hydra's record of the overrides, from the settings stored in search.db.
    for d in compare.find_runs([sweep]):
        shutil.copytree(d, tmp_path / d.name, ignore=shutil.ignore_patterns(".hydra"))
    bare = compare.group_runs([compare.load(d) for d in compare.find_runs([tmp_path])])
    assert sorted(bare) == ['agent.name="qlearning"', 'agent.name="random"']
    # One group when nothing but the seed differs.
    same = [compare.load(d) for d in compare.find_runs([sweep])[:2]]
    assert list(compare.group_runs(same)) == ["all runs"]


def test_paired_tests_pair_the_seeds(sweep):
    from scipy.stats import wilcoxon

    runs = [compare.load(d) for d in compare.find_runs([sweep])]
    groups = compare.group_runs(runs)
    out = compare.compare(groups, reference="agent=random")
    assert out["reference"] == "agent=random"
    q = out["groups"]["agent=qlearning"]
    assert q["paired_seeds"] == 2 and q["runs"] == 2
    final = {
        name: {r["seed"]: r["curves"]["best_curve"][-1] for r in rs} for name, rs in groups.items()
    }
    b = [final["agent=qlearning"][s] for s in (0, 1)]
    assert q["p_best"] is None  # 2 pairs: no test (a Wilcoxon needs 6 to reach 0.05)
    assert q["best"][0] == pytest.approx(np.mean(b))
    # From 6 pairs on, the paired Wilcoxon test of the seeds' values.
    a6, b6 = [0.70, 0.71, 0.69, 0.72, 0.70, 0.73], [0.72, 0.74, 0.70, 0.75, 0.71, 0.76]
    assert compare.paired_p(a6, b6) == pytest.approx(wilcoxon(a6, b6).pvalue)
    assert compare.paired_p(a6[:5], b6[:5]) is None
    with pytest.raises(Exception, match="no group 'agent=tpe'"):
        compare.compare(groups, reference="agent=tpe")


def test_comparison_report_of_a_sweep_folder(sweep, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    page = sweep / "comparison.html"
    text = page.read_text()
    assert "agent=qlearning" in text and "agent=random" in text and "4 runs in 2 groups" in text
    assert (
        text.count("data:image/png;base64,") == 1 and text.count("<svg") == 2
    )  # curves; a block per group
    links = re.findall(r"<a href='([^']+)'>", text)
    assert len(links) == 4 and all(
        (sweep / link).is_file() for link in links
    )  # each run's own report
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "<script" not in text
    # Several run folders given one by one: compared among themselves.
    runs = compare.find_runs([sweep])
    out = tmp_path / "two.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn.report",
            str(runs[0]),
            str(runs[2]),
            "-o",
            str(out),
            "--no-run-reports",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 runs in 2 groups" in out.read_text()


@pytest.mark.slow
@needs_chromium
def test_comparison_report_renders_in_headless_chromium(sweep, tmp_path):
    page = tmp_path / "c.html"
    subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(sweep), "-o", str(page), "--no-run-reports"],
        check=True,
        capture_output=True,
    )
    assert_renders(page, tmp_path)


def test_report_refuses_what_is_not_a_run(tmp_path):
    for path, message in (
        (tmp_path / "missing", "is not a folder"),
        (tmp_path, "no search.db and no run folders under it"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "blockqnn.report", str(path)], capture_output=True, text=True
        )
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "comparison.html").exists()


def test_a_finished_search_saves_a_snapshot_that_restores_without_replays(sweep, monkeypatch):
    from blockqnn.agent.qlearning import QLearningAgent
    from blockqnn.search.store import parts_of, read_run

    saved = read_run(compare.find_runs([sweep])[0])
    state, parts = saved["agent"]
    agent = state["agent"]
    assert agent["name"] == "qlearning" and agent["snapshot_told"] == agent["told"] == 16
    # Restoring it loads the snapshot and replays nothing: no learning step runs.
    replays = []
    monkeypatch.setattr(QLearningAgent, "_learn", lambda self, n: replays.append(n))
    restored = QLearningAgent(max_layers=agent["max_layers"], seed=agent["seed"])
    restored.restore(agent, parts_of(parts, "agent"))
    assert replays == [] and restored.told == 16 and len(restored.memory) == 16
    snapshot = json.loads(parts["agent.snapshot"]["q"])
    assert {tuple(s_): {tuple(a): v for a, v in row} for s_, row in snapshot} == restored.q


def test_reward_figure_at_the_papers_scale_shows_the_iteration_means():
    from matplotlib.collections import PolyCollection

    rng = np.random.default_rng(0)
    eps = [
        {
            "id": i,
            "iteration": i // 64,
            "epsilon": 1.0 - 0.9 * i / 11392,
            "status": "done",
            "reward": float(0.6 + 0.05 * i / 11392 + rng.normal(0, 0.03)),
        }
        for i in range(11392)
    ]
    fig = fig_rewards(eps)
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # the iteration band
    means = [line for line in ax.lines if len(line.get_xdata()) == 178]
    assert (
        len(means) == 1 and np.ptp(means[0].get_ydata()) < 0.1
    )  # a readable line, not the scatter's wall
    dots = ax.collections[0]
    assert dots.get_rasterized() and dots.get_sizes()[0] <= 4


def test_holm_adjusts_step_down_and_stays_monotone():
    adjusted = compare.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None, "e": float("nan")})
    assert set(adjusted) == {"a", "b", "c"}  # no p-value, no test
    assert adjusted["a"] == pytest.approx(0.03)  # 3 x 0.01
    assert adjusted["c"] == pytest.approx(0.06)  # 2 x 0.03
    assert adjusted["b"] == pytest.approx(0.06)  # 1 x 0.04, raised to the previous step
    assert compare.holm({"x": 0.6, "y": 0.7}) == {"x": 1.0, "y": 1.0}
