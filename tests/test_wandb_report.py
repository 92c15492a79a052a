"""python -m blockqnn.wandb_report: a report definition for an offline run and an offline
two-run sweep, every panel backed by keys those runs logged; without credentials it says so."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

FAST = [
    "evaluator=surrogate",
    "logger=wandb",
    "space.max_layers=6",
    "agent.epsilon_schedule=[[1.0,2],[0.3,2]]",
    "agent.batch_size=4",
    "search.reevaluate.top=2",
    "search.reevaluate.repeats=1",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(root)  # no W&B login
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "search.py"),
            "-m",
            "agent=qlearning,random",
            *FAST,
            f"hydra.sweep.dir={root / 'sweep'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return sorted(p for p in (root / "sweep").iterdir() if (p / "search.db").exists()), env


def _check(spec, folders):
    from blockqnn.wandb_report import runs_from_folders

    runs = runs_from_folders(folders)
    history = set().union(*(r["history"] for r in runs))
    summary = set().union(*(r["summary"] for r in runs))
    config = set().union(*(r["config"] for r in runs))
    for p in spec["panels"]:
        for k in p.get("y", []) + p.get("media_keys", []):
            assert k in history, (p["title"], k)
        for k in p.get("metrics", []) + p.get("summary", []):
            assert k in summary, (p["title"], k)
        for k in p.get("groupby", []) + p.get("config", []):
            assert k in config, (p["title"], k)
    return runs


def test_report_of_a_two_run_sweep(sweep, tmp_path):
    folders, env = sweep
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "blockqnn.wandb_report",
            "me/blockqnn",
            "--runs",
            *map(str, folders),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no W&B credentials here" in proc.stderr and "not saved" in proc.stderr
    spec = json.loads(out.read_text())
    _check(spec, folders)
    assert "agent.name" in spec["swept"] and "seed" not in spec["swept"]
    kinds = {p["type"]: p for p in spec["panels"]}
    assert set(kinds) == {"line", "bar", "media", "parallel", "table"}
    assert kinds["bar"]["metrics"] == ["stage_mean_reward/1", "stage_mean_reward/0.3"]
    assert (
        "best_reward" in kinds["parallel"]["summary"]
        and "agent.name" in kinds["parallel"]["config"]
    )
    assert {"best_reward", "best_params", "best_flops", "best_nsc", "trained"} <= set(
        kinds["table"]["summary"]
    )
    assert spec["group"] == folders[0].parent.name  # the sweep folder: W&B's group of its runs


def test_report_of_one_offline_run(sweep, tmp_path):
    from blockqnn.wandb_report import build, definition

    folders, _ = sweep
    from blockqnn.wandb_report import runs_from_folders

    runs = runs_from_folders(folders[:1])
    spec = definition(runs, "me", "blockqnn", None, "one run")
    _check(spec, folders[:1])
    assert spec["swept"] == [] and spec["panels"][0]["groupby"] == ["agent.name"]
    report = build(spec)  # a wandb-workspaces Report (saving it needs credentials)
    assert report.title == "one run" and len(report.blocks[-1].panels) == len(spec["panels"])


def test_bad_target_and_no_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)
    bad = subprocess.run(
        [sys.executable, "-m", "blockqnn.wandb_report", "no-slash"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "<entity>/<project>" in bad.stderr
    none = subprocess.run(
        [sys.executable, "-m", "blockqnn.wandb_report", "me/blockqnn"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert (
        none.returncode == 2
        and "no W&B credentials" in none.stderr
        and "Traceback" not in none.stderr
    )
