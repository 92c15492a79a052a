"""The analysis notebook and the HTML report, run against a tiny real search."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from blockqnn import analysis
from tests._browser import assert_renders, needs_chromium

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            "recipe.epochs=1",
            "network.width=8",
            "space.max_layers=4",
            "agent.batch_size=3",
            "agent.epsilon_schedule=[[1.0,2],[0.3,1]]",
            "logger=none",
            f"hydra.run.dir={run}",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return run


def test_analysis_helpers(tiny_run):
    run = analysis.load_run(tiny_run)
    assert len(run["episodes"]) == 9
    shares = analysis.layer_type_shares(run)
    assert set(shares) == {1.0, 0.3}
    assert all(abs(sum(v.values()) - 1) < 1e-9 for v in shares.values())
    # The start state's Q-values, best first (bugs: another state's row, the wrong order, the
    # untrained table): first layers only (fed by the input), the agent's own values, and the
    # layers it tried have moved from the optimistic q_init of 1.0.
    top = analysis.q_summary(run, k=50)
    values = [v for _, v in top]
    assert top and values == sorted(values, reverse=True)
    start = dict((json.dumps(a), v) for s, row in run["agent"]["q"] if s == [0] * 5 for a, v in row)
    assert dict(top) == start
    assert all(json.loads(a)[0] == 1 and json.loads(a)[3] == 0 for a, _ in top)
    firsts = {json.dumps(json.loads(e["nsc"])[0]) for e in analysis.finished(run)}
    assert any(abs(start[a] - 1.0) > 1e-9 for a in firsts if a in start)
    assert len(analysis.q_summary(run, k=3)) == min(3, len(top))
    assert analysis.pareto([(1, 0.5), (2, 0.4), (3, 0.9), (0.5, 0.1)]) == [
        (0.5, 0.1),
        (1, 0.5),
        (3, 0.9),
    ]


def test_report_is_self_contained(tiny_run, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(tiny_run), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.count("data:image/png;base64,") == 4 and "<svg" in text
    # the best block's drawing and the network it is stacked into (from the run's config)
    assert "The best block's network" in text and text.count("<svg") >= 2
    # Nothing loaded from elsewhere (XML namespaces inside the SVGs are names, not loads).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text and "<link" not in text
    bad = subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(tmp_path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no search.db" in bad.stderr


@pytest.mark.slow
def test_notebook_runs_on_a_run_folder(tiny_run):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    # Kept in the repository without outputs.
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    os.environ["BLOCKQNN_RUN"] = str(tiny_run)
    try:
        NotebookClient(
            nb,
            timeout=300,
            kernel_name="python3",
            resources={"metadata": {"path": str(ROOT / "notebooks")}},
        ).execute()
    finally:
        os.environ.pop("BLOCKQNN_RUN")
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "display_data"
    ]
    assert len(images) >= 5


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    html = tmp_path / "r.html"
    subprocess.run(
        [sys.executable, "-m", "blockqnn.report", str(tiny_run), "-o", str(html)], check=True
    )
    assert_renders(html, tmp_path)
