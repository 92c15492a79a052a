"""bench/end_to_end.py: the whole pipeline at a tiny size (independent searches of both
strategies, their returned blocks and the hand-designed ones registered, final trainings, the
pre-registered analysis and its figure), resumable without training twice; and the analysis's
statistics on numbers worked out by hand."""

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import end_to_end  # noqa: E402


def _in_process(script: str, args: list[str]) -> None:
    """end_to_end.run without a subprocess's start-up (about 8 s each, 14 of them): the same
    entry point and overrides, in this process (tests/conftest.run_entry)."""
    from tests.conftest import run_entry

    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    overrides = [a for a in args if not a.startswith("hydra.run.dir=")]
    code, err = run_entry(script.removesuffix(".py"), run_dir, *overrides)
    if code:
        raise RuntimeError(f"{script} failed: {err[-2000:]}")


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setattr(end_to_end, "run", _in_process)
    out = tmp_path / "out"
    argv = ["--profile", "tiny", "--out", str(out), "--work", str(tmp_path / "work")]
    result = end_to_end.main(argv)
    searches = json.loads((out / "end_to_end_tiny_searches.json").read_text())
    assert sorted((s["strategy"], s["seed"]) for s in searches) == [
        (a, s) for a in ("qlearning", "random") for s in (0, 1, 2)
    ]
    for s in searches:  # each stopped at the budget in unique trainings, re-evaluation on top
        assert s["first_trainings"] == 3 and s["reevaluations"] >= 1, s
    registered = json.loads((out / "end_to_end_tiny_registered.json").read_text())["blocks"]
    keys = {b["key"] for b in registered}
    assert {s["key"] for s in searches} <= keys  # every returned block, once
    assert {b["name"] for b in registered if "hand" in b["kind"]} == {"plain", "conv5"}
    finals = json.loads((out / "end_to_end_tiny_finals.json").read_text())
    assert {(f["key"], f["seed"]) for f in finals} == {(k, 0) for k in keys}
    for f in finals:  # every network at the budget (network.params=6000, within 3%)
        assert abs(f["params"] - 6000) <= 180 and 0 <= f["test_acc"] <= 1, f
    analysis = json.loads((out / "end_to_end_tiny_analysis.json").read_text())
    hand = [k for k, t in analysis["blocks"].items() if "hand" in t["kind"]]
    best = max(hand, key=lambda k: analysis["blocks"][k]["val_acc"])  # on validation
    assert analysis["best_hand"]["key"] == best
    assert result["primary"]["runs"] == 3 and result["primary"]["p_one_sided"] is not None
    assert set(analysis["secondary"]) and (out / "end_to_end_tiny_final_accuracies.png").exists()
    # A rerun trains nothing (no search, no training) and leaves every record as it was.
    monkeypatch.setattr(end_to_end, "run", lambda script, args: pytest.fail(f"ran {script} again"))
    before = {
        p.name: p.read_text() for p in out.glob("*.json") if not p.name.endswith("analysis.json")
    }
    end_to_end.main(argv)
    assert {
        p.name: p.read_text() for p in out.glob("*.json") if not p.name.endswith("analysis.json")
    } == before


def test_a_registration_is_never_changed(tmp_path):
    study = end_to_end.Study("tiny", tmp_path, tmp_path / "work")
    one = [
        {"strategy": "qlearning", "seed": 0, "key": "k1", "nsc": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]}
    ]
    first = study.register(one)
    assert study.register(one) == first
    other = [{**one[0], "key": "k2", "nsc": [[1, 1, 1, 0, 0], [2, 7, 0, 0, 0]]}]
    with pytest.raises(SystemExit, match="another registration"):
        study.register(other)
    assert json.loads((tmp_path / "end_to_end_tiny_registered.json").read_text())["blocks"] == first


def test_a_profile_takes_the_finals_another_trained_under_the_same_recipe(tmp_path, monkeypatch):
    """cpu_refuse's finals of a block and seed that cpu already trained come from cpu's records;
    the others are trained; a source with another recipe is refused."""
    tiny = end_to_end.PROFILES["tiny"]
    monkeypatch.setitem(
        end_to_end.PROFILES, "tiny_b", {**tiny, "finals_from": "tiny", "final_seeds": [0, 1]}
    )
    old = {"key": "k1", "block": [], "seed": 0, "val_acc": 0.5, "test_acc": 0.4}
    (tmp_path / "end_to_end_tiny_finals.json").write_text(json.dumps([old]))
    trained = []

    def fake_run(script: str, args: list[str]) -> None:
        folder = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")))
        folder.mkdir(parents=True)
        trained.append(next(a for a in args if a.startswith("seed=")))
        metrics = {"val_acc": 0.6, "test_acc": 0.6, "params": 1, "flops": 1, "widths": [1]}
        (folder / "metrics.json").write_text(json.dumps({**metrics, "wall_time": 1.0}))

    monkeypatch.setattr(end_to_end, "run", fake_run)
    study = end_to_end.Study("tiny_b", tmp_path, tmp_path / "work")
    done = study.finals([{"key": "k1", "kind": "hand", "nsc": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]}])
    assert trained == ["seed=1"]  # seed 0 was cpu's
    assert done[0] == {**old, "from": "tiny"} and done[1]["seed"] == 1
    assert json.loads(study.finals_path.read_text()) == done
    monkeypatch.setitem(
        end_to_end.PROFILES, "tiny_b", {**tiny, "finals_from": "tiny", "final": ["seed=3"]}
    )
    with pytest.raises(SystemExit, match="final recipe differs"):
        end_to_end.Study("tiny_b", tmp_path, tmp_path / "w2").finals([])


def _finals(values: dict[str, list[float]]) -> list[dict]:
    return [
        {"key": k, "seed": s, "val_acc": v, "test_acc": v, "params": 1, "widths": [1]}
        for k, vs in values.items()
        for s, v in enumerate(vs)
    ]


def test_the_analysis_chooses_on_validation_and_tests_searches_as_the_unit():
    registered = [
        {"key": "h1", "kind": "hand", "name": "h1"},
        {"key": "h2", "kind": "hand", "name": "h2"},
        *({"key": f"q{i}", "kind": "searched"} for i in range(3)),
        *({"key": f"r{i}", "kind": "searched"} for i in range(3)),
    ]
    searches = [
        *(
            {"strategy": "qlearning", "seed": i, "key": f"q{i}", "unique_trainings": 10}
            for i in range(3)
        ),
        *(
            {"strategy": "random", "seed": i, "key": f"r{i}", "unique_trainings": 10}
            for i in range(3)
        ),
    ]
    values = {
        "h1": [0.80, 0.81],
        "h2": [0.70, 0.71],
        "q0": [0.83, 0.84],
        "q1": [0.85, 0.86],
        "q2": [0.84, 0.86],
        "r0": [0.80, 0.82],
        "r1": [0.79, 0.80],
        "r2": [0.81, 0.80],
    }
    finals = _finals(values)
    finals[2]["test_acc"] = 0.99  # h2's test figure is high: the choice must not see it
    a = end_to_end.analyse(searches, registered, finals)
    assert a["best_hand"]["key"] == "h1"
    # per search: its block minus h1, paired by seed, averaged over seeds
    q = [((0.83 - 0.80) + (0.84 - 0.81)) / 2, ((0.85 - 0.80) + (0.86 - 0.81)) / 2, 0.045]
    assert a["primary"]["difference"] == pytest.approx(sum(q) / 3, abs=1e-4)
    assert a["primary"]["runs"] == 3 and a["primary"]["significant"]
    from scipy import stats

    assert a["primary"]["p_one_sided"] == pytest.approx(
        stats.ttest_1samp(q, 0.0, alternative="greater").pvalue
    )
    assert all(v["p_holm"] >= v["p"] for v in a["secondary"].values())
    # fewer than 3 runs: no p-value
    few = end_to_end.analyse(searches[:2] + searches[3:5], registered, finals)
    assert few["primary"]["p_one_sided"] is None
    # while the study runs: a seed half done is left out, and the tables print before any
    # searched block has its trainings
    partial = finals + [dict(finals[0], seed=9)]
    assert end_to_end.analyse(searches, registered, partial)["final_seeds"] == [0, 1]
    hand_only = [r for r in finals if r["key"].startswith("h") and r["seed"] == 0]
    early = end_to_end.analyse(searches, registered, hand_only)
    assert early["primary"]["difference"] is None and early["best_hand"]["key"] == "h1"
    assert "no search's returned block" in end_to_end.markdown(early)
    # With the study's final seeds named, no test figure and no test until every block has
    # them all: validation only, the best hand-designed block still chosen on it.
    pending = end_to_end.analyse(searches, registered, finals, final_seeds=[0, 1, 2])
    assert "primary" not in pending and "secondary" not in pending
    assert all(t["test_acc"] is None for t in pending["blocks"].values())
    assert pending["best_hand"]["key"] == "h1" and "test_withheld" in pending
    assert "withheld" in end_to_end.markdown(pending)
    assert "0.99" not in json.dumps(pending)
    done = end_to_end.analyse(searches, registered, finals, final_seeds=[0, 1])
    assert done["primary"] == a["primary"] and "test_withheld" not in done
