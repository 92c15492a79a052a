"""bench/end_to_end.py at a tiny size: a real search (and the faster version's), its best block,
hand-designed and random blocks trained by train.py at matched parameter counts, test accuracy
per seed, the summary with its paired comparisons and the figure."""

import json
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    import end_to_end

    # the smallest pipeline that has every kind: one searched block, the faster version's, one
    # hand-designed, one random (the CIFAR transfer is the same train_all on another folder)
    monkeypatch.setitem(end_to_end.PROFILES["tiny"], "transfer", None)
    monkeypatch.setitem(end_to_end.PROFILES["tiny"], "hand", ("plain",))
    out = tmp_path / "out"
    summary = end_to_end.main(
        ["--profile", "tiny", "--out", str(out), "--work", str(tmp_path / "work")]
    )
    records = json.loads((out / "end_to_end_tiny.json").read_text())
    names = {r["name"] for r in records}
    assert names == {"searched_1", "faster_1", "plain", "random_1"}
    for r in records:  # every training recorded whole, at a matched parameter count
        assert {"block", "seed", "params", "flops", "test_acc", "train_s"} <= set(r)
        assert abs(r["params"] - r["params_target"]) <= 0.1 * r["params_target"], r
        assert 0.0 <= r["test_acc"] <= 1.0
    main = summary["main"]
    assert main["best_hand"] == "plain"
    assert set(main["comparisons"]) == {"searched_vs_best_hand", "searched_vs_random"}
    assert (out / "end_to_end_tiny.png").exists() and (
        out / "end_to_end_tiny_summary.json"
    ).exists()
    # rerun: everything recorded is skipped (resumable), nothing trained twice: no training
    # runs at all (train.py would fail on the call below), and the records stay as they were
    monkeypatch.setattr(
        end_to_end.subprocess, "run", lambda *a, **k: pytest.fail(f"ran again: {a[0][:3]}")
    )
    again = end_to_end.main(
        ["--profile", "tiny", "--out", str(out), "--work", str(tmp_path / "work")]
    )
    assert again["trainings"] == len(records)
    assert json.loads((out / "end_to_end_tiny.json").read_text()) == records


def test_matched_width_finds_the_parameter_count():
    sys.path.insert(0, str(ROOT / "bench"))
    import end_to_end

    from blockqnn.space.presets import preset

    target = end_to_end._params(preset("resnet_basic").to_list(), 24, 1, 14, 1)
    for name in ("plain", "inception", "densenet_like"):
        width, params = end_to_end.matched_width(preset(name).to_list(), target, 1, 14, 1)
        assert abs(params - target) <= 0.1 * target and width > 2


def test_the_transfer_trains_on_its_own_data_keys(tmp_path, monkeypatch):
    """A stage with its own data (the CIFAR transfer) drops the recipe's data keys: the CPU
    profile's recipe has data=fashion_mnist and data.resize=14, which an image folder refuses
    (the bug that stopped the first transfer run)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import end_to_end

    seen = []

    def fake_run(cmd):
        seen.append(cmd)
        raise RuntimeError("stop")

    monkeypatch.setattr(end_to_end, "run", fake_run)
    pipe = end_to_end.Pipeline("cpu", tmp_path, tmp_path / "work", smoke=False)
    pipe.records = []
    data = ["data=image_folder", "data.root=/x", "data.input_size=32", "train.epochs=2"]
    with pytest.raises(RuntimeError, match="stop"):
        pipe.train_all("cifar10_transfer", [("plain", "hand", [[1, 1, 3, 0, 0]])], data, 3, 32, [0])
    cmd = seen[0]
    data_keys = [a for a in cmd if a.startswith(("data=", "data."))]
    assert data_keys == data[:3]  # the stage's, not the recipe's (no fashion_mnist, no resize)
    assert "train.epochs=2" in cmd and "train.batch_size=128" in cmd  # the rest of the recipe
