"""Proxy evaluation: the reward, failure statuses, restarts, determinism, worker processes."""

import json
import math
import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from blockqnn.evaluator import evaluate
from blockqnn.evaluator.module import BlockClassifier
from blockqnn.evaluator.reward import RewardConfig, shaped_reward

BLOCK = "[[1,1,3,0,0],[2,1,3,1,0],[3,5,0,0,2],[4,6,0,1,3],[5,2,3,0,0]]"
FAST = {"recipe": {"epochs": 2, "batch_size": 64}, "network": {"width": 8}}


def test_reward_formula_on_known_numbers():
    cfg = RewardConfig(mu=1.0, rho=8.0, scale=0.01)
    # accuracy 0.9, 10x the reference FLOPs, density 1.5
    expected = 0.9 - 0.01 * (1.0 * math.log(10.0) + 8.0 * math.log(1.5))
    assert shaped_reward(0.9, 1e7, 1e6, 1.5, cfg) == pytest.approx(expected)
    assert shaped_reward(0.9, 1e6, 1e6, 1.0, cfg) == pytest.approx(0.9)  # the reference chain
    assert shaped_reward(0.5, 2e6, 1e6, 2.0, RewardConfig(mu=2, rho=0, scale=1)) == pytest.approx(
        0.5 - 2 * math.log(2))


def test_ok_result_is_plain_and_complete():
    r = evaluate(BLOCK, FAST)
    assert r["status"] == "ok", r["error"]
    json.dumps(r)
    pickle.dumps(r)
    assert 0.0 <= r["accuracy"] <= 1.0 and r["epochs"] == 2 and r["restarts"] == 0
    assert r["flops"] > 0 and r["params"] > 0 and r["density"] == pytest.approx(7 / 5)
    assert r["reward"] == pytest.approx(r["accuracy"] - 0.01 * (
        math.log(r["flops"] / _ref_flops()) + 8 * math.log(1.4)))
    assert len(r["history"]) == 2 and r["history"][-1] == r["accuracy"]


def _ref_flops():
    from blockqnn.space.cost import count_flops
    from blockqnn.space.network import build_network

    net = build_network("[[1,1,3,0,0]]", num_classes=10, in_channels=1, input_size=8, width=8,
                        blocks_per_stage=1, stages=3)
    return count_flops(net, (1, 8, 8))


def test_same_seed_same_result():
    a, b = evaluate(BLOCK, FAST), evaluate(BLOCK, FAST)
    assert a["accuracy"] == b["accuracy"] and a["reward"] == b["reward"] and a["history"] == b["history"]


def test_non_finite_loss_is_diverged(monkeypatch):
    original = BlockClassifier.training_step

    def nan_step(self, batch, batch_idx):
        return original(self, batch, batch_idx) * float("nan")

    monkeypatch.setattr(BlockClassifier, "training_step", nan_step)
    r = evaluate(BLOCK, FAST)
    assert r["status"] == "diverged" and r["reward"] == 0.0
    assert "non-finite" in r["error"]


def test_exception_in_forward_is_failed_with_message(monkeypatch):
    def boom(self, x):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(BlockClassifier, "forward", boom)
    r = evaluate(BLOCK, FAST)
    assert r["status"] == "failed" and r["reward"] == 0.0
    assert "CUDA out of memory (simulated)" in r["error"]


def test_invalid_block_is_failed_not_raised():
    r = evaluate("[[1,1,2,0,0]]", FAST)
    assert r["status"] == "failed" and "layer 1" in r["error"] and "kernel" in r["error"]


def test_restart_rule_fires_when_first_epoch_is_at_chance():
    # A threshold no accuracy can pass: every first epoch counts as "at chance".
    cfg = {**FAST, "recipe": {**FAST["recipe"], "restart": {"max": 3, "factor": 0.4, "threshold": 1.01}}}
    r = evaluate(BLOCK, cfg)
    assert r["status"] == "ok" and r["restarts"] == 3
    assert r["lr"] == pytest.approx(1e-3 * 0.4 ** 3)
    assert r["epochs"] == 2  # the last attempt trains its full epochs
    # Chance threshold by default: a learning block does not restart.
    assert evaluate(BLOCK, FAST)["restarts"] == 0


def test_checkpoint_rebuilds_its_network(tmp_path):
    import lightning as L

    from blockqnn.evaluator.proxy import datamodule_for, network_spec, resolve_config

    cfg = resolve_config(FAST)
    dm = datamodule_for(cfg)
    model = BlockClassifier(json.loads(BLOCK), network_spec(cfg, dm))
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = BlockClassifier.load_from_checkpoint(path, weights_only=True)
    assert loaded.block.key == model.block.key
    assert loaded.hparams.nsc == json.loads(BLOCK) + [[6, 7, 0, 0, 0]]
    x = torch.randn(3, 1, 8, 8)
    model.eval(), loaded.eval()
    assert torch.allclose(model(x), loaded(x))


@pytest.mark.slow
def test_evaluate_in_a_worker_process():
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        remote = pool.submit(evaluate, BLOCK, FAST).result(timeout=300)
    local = evaluate(BLOCK, FAST)
    assert remote["status"] == "ok"
    assert remote["accuracy"] == pytest.approx(local["accuracy"], abs=1e-6)
