"""hparams_search=...: Hydra's Optuna sweeper over search.py and train.py, whose returned
metrics are the objectives (the returned block's mean reward; the validation accuracy)."""

import subprocess
import sys

import yaml

from tests.conftest import ROOT


def _sweep(script, tmp_path, *overrides):
    out = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides, f"hydra.sweep.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return yaml.safe_load((tmp_path / "optimization_results.yaml").read_text()), out.stderr


def test_agent_constants_are_tuned_on_the_surrogate(tmp_path):
    """Bugs caught: an entry point that returns None (Optuna then fails every trial), a trial
    that does not receive its parameters, a best value that is not a trial's returned mean."""
    import json

    result, err = _sweep(
        "search.py", tmp_path, "hparams_search=agent_surrogate", "hydra.sweeper.n_trials=3"
    )
    best = result["best_params"]
    assert set(best) == {
        "agent.params.learning_rate",
        "agent.params.q_init",
        "agent.params.replay_size",
    }
    trials = sorted(p for p in tmp_path.iterdir() if p.name.isdigit())
    assert len(trials) == 3
    returned = [json.loads((t / "best_block.json").read_text())["reward"] for t in trials]
    assert result["best_value"] == max(returned)
    chosen = trials[returned.index(max(returned))]
    overrides = yaml.safe_load((chosen / ".hydra" / "overrides.yaml").read_text())
    for key, value in best.items():
        assert f"{key}={value}" in overrides


def test_train_recipe_is_tuned_on_validation_accuracy(tmp_path):
    result, _ = _sweep(
        "train.py",
        tmp_path,
        "hparams_search=train_recipe",
        "hydra.sweeper.n_trials=2",
        "block=plain",
    )
    import json

    vals = [json.loads((t / "metrics.json").read_text()) for t in sorted(tmp_path.glob("[0-9]*"))]
    assert len(vals) == 2
    assert result["best_value"] == max(m["val_acc"] for m in vals)  # never the test accuracy
    assert (
        result["best_value"] != max(m["test_acc"] for m in vals)
        or len({m["val_acc"] for m in vals} | {m["test_acc"] for m in vals}) < 3
    )
