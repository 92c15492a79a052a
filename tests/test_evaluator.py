"""The Lightning evaluator: the reward, result statuses, restarts, determinism, the Trainer
keys a user sets, worker processes."""

import json
import math
import pickle

import pytest
import torch

from blockqnn.evaluator.module import BlockClassifier
from blockqnn.evaluator.reward import RewardConfig, shaped_reward
from tests.conftest import lightning_evaluator

BLOCK = "[[1,1,3,0,0],[2,1,3,1,0],[3,5,0,0,2],[4,6,0,1,3],[5,2,3,0,0]]"
FAST = ["recipe.epochs=2", "recipe.batch_size=64", "network.width=8"]


def evaluate(nsc, overrides=FAST):
    return lightning_evaluator(*overrides)(nsc)


def test_reward_formula_on_known_numbers():
    cfg = RewardConfig(mu=1.0, rho=8.0, scale=0.01)
    # accuracy 0.9, 10x the reference FLOPs, density 1.5
    expected = 0.9 - 0.01 * (1.0 * math.log(10.0) + 8.0 * math.log(1.5))
    assert shaped_reward(0.9, 1e7, 1e6, 1.5, cfg) == pytest.approx(expected)
    assert shaped_reward(0.9, 1e6, 1e6, 1.0, cfg) == pytest.approx(0.9)  # the reference chain
    assert shaped_reward(0.5, 2e6, 1e6, 2.0, RewardConfig(mu=2, rho=0, scale=1)) == pytest.approx(
        0.5 - 2 * math.log(2)
    )


def test_ok_result_is_plain_and_complete():
    r = evaluate(
        BLOCK, [*FAST, "reward.mu=1.0", "reward.rho=8.0"]
    )  # both terms of the shaped reward at work
    assert r["status"] == "ok", r["error"]
    json.dumps(r)
    pickle.dumps(r)
    assert 0.0 <= r["accuracy"] <= 1.0 and r["epochs"] == 2 and r["restarts"] == 0
    assert r["flops"] > 0 and r["params"] > 0 and r["density"] == pytest.approx(7 / 5)
    assert r["reward"] == pytest.approx(
        r["accuracy"] - 0.01 * (math.log(r["flops"] / _ref_flops()) + 8 * math.log(1.4))
    )
    assert len(r["history"]) == 2 and r["history"][-1] == r["accuracy"]
    # Each epoch's mean training loss (TSE is their sum): finite, positive, falling on digits.
    assert len(r["train_loss"]) == 2 and all(0 < x < 10 for x in r["train_loss"])
    assert r["train_loss"][1] < r["train_loss"][0]


def test_a_tse_reward_reads_the_training_losses():
    """reward.signal=tse: the reward's first term is 1 - mean(epoch training losses) / ln(10),
    the same penalties after it; the accuracy is still the validation accuracy."""
    r = evaluate(BLOCK, [*FAST, "reward.signal=tse", "reward.mu=1.0", "reward.rho=8.0"])
    assert r["status"] == "ok", r["error"]
    signal = 1 - (sum(r["train_loss"]) / len(r["train_loss"])) / math.log(10)
    penalty = 0.01 * (math.log(r["flops"] / _ref_flops()) + 8 * math.log(1.4))
    assert r["reward"] == pytest.approx(signal - penalty)
    assert r["accuracy"] == r["history"][-1] and r["reward"] != pytest.approx(
        r["accuracy"] - penalty
    )


def _ref_flops():
    from blockqnn.space.cost import count_flops
    from blockqnn.space.network import build_network

    net = build_network(
        "[[1,1,3,0,0]]",
        num_classes=10,
        in_channels=1,
        input_size=8,
        width=8,
        blocks_per_stage=1,
        stages=3,
    )
    return count_flops(net, (1, 8, 8))


def test_same_seed_same_result():
    a, b = evaluate(BLOCK), evaluate(BLOCK)
    assert (
        a["accuracy"] == b["accuracy"]
        and a["reward"] == b["reward"]
        and a["history"] == b["history"]
    )


def test_non_finite_loss_is_diverged(monkeypatch):
    original = BlockClassifier.training_step

    def nan_step(self, batch, batch_idx):
        return original(self, batch, batch_idx) * float("nan")

    monkeypatch.setattr(BlockClassifier, "training_step", nan_step)
    r = evaluate(BLOCK)
    assert r["status"] == "diverged" and r["reward"] == 0.0
    assert "non-finite" in r["error"]


def test_a_bug_is_raised_not_recorded_and_the_local_executor_reports_its_traceback(monkeypatch):
    from blockqnn.executors import LocalExecutor

    def boom(self, x):
        raise RuntimeError("a bug in our own code (simulated)")

    monkeypatch.setattr(BlockClassifier, "forward", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        evaluate(BLOCK)
    ex = LocalExecutor(lightning_evaluator(*FAST))
    ex.submit(7, json.loads(BLOCK))
    [(tag, r)] = ex.wait()
    assert tag == 7 and r["status"] == "failed" and r["reward"] == 0.0
    assert "Traceback" in r["error"] and "in boom" in r["error"] and "simulated" in r["error"]


def test_out_of_memory_is_oom_with_the_candidate_size(monkeypatch):
    def oom(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    monkeypatch.setattr(BlockClassifier, "forward", oom)
    r = evaluate(BLOCK)
    assert r["status"] == "oom" and r["reward"] == 0.0
    assert (
        r["params"] > 0
        and f"{r['params']} parameters" in r["error"]
        and "out of memory" in r["error"]
    )


def test_time_limit_gives_timeout():
    r = evaluate(BLOCK, [*FAST, "evaluator.timeout_s=0.001"])
    assert r["status"] == "timeout" and r["reward"] == 0.0 and "timeout_s" in r["error"]


def test_invalid_block_is_invalid_not_raised():
    r = evaluate("[[1,1,2,0,0]]")
    assert r["status"] == "invalid" and "layer 1" in r["error"] and "kernel" in r["error"]


def test_every_trainer_key_the_user_sets_reaches_each_candidate(monkeypatch):
    from blockqnn.evaluator import training

    built = []
    original = training.build_trainer

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(training, "build_trainer", spy)
    r = evaluate(
        BLOCK,
        [
            *FAST,
            "trainer.gradient_clip_val=0.5",
            "trainer.gradient_clip_algorithm=value",
            "trainer.limit_train_batches=3",
            "+trainer.max_time=null",
            "callbacks=early_stopping",
        ],
    )
    assert r["status"] == "ok"
    assert built and all(
        t.gradient_clip_val == 0.5 and t.gradient_clip_algorithm == "value" for t in built
    )
    assert built[-1].global_step == 6  # 2 epochs of 3 batches
    assert any(type(c).__name__ == "EarlyStopping" for c in built[-1].callbacks)


def test_restart_rule_fires_when_first_epoch_is_at_chance():
    # A threshold no accuracy can pass: every first epoch counts as "at chance".
    r = evaluate(BLOCK, [*FAST, "recipe.restart.threshold=1.01"])
    assert r["status"] == "ok" and r["restarts"] == 3
    assert r["lr"] == pytest.approx(1e-3 * 0.4**3)
    assert r["epochs"] == 2  # the last attempt trains its full epochs
    # Chance threshold by default: a learning block does not restart.
    assert evaluate(BLOCK)["restarts"] == 0


def test_checkpoint_rebuilds_its_network(tmp_path):
    import lightning as L

    ev = lightning_evaluator(*FAST)
    dm = ev.datamodule
    model = BlockClassifier(
        json.loads(BLOCK),
        ev.network_spec(),
        {"_target_": "torch.optim.Adam", "_partial_": True},
        None,
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
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
    from blockqnn.evaluator import evaluator_spec
    from blockqnn.executors import PoolExecutor
    from tests.conftest import compose_search

    spec = evaluator_spec(compose_search(*FAST))
    pool = PoolExecutor(
        spec,
        workers_per_gpu=1,
        cpu_workers=1,
        gpus=[],
        threads_per_cpu_worker=torch.get_num_threads(),
        max_retries=0,
    )  # the same threads as this process: the same float reductions
    pool.submit(0, json.loads(BLOCK))
    [(_, remote)] = pool.wait()
    pool.close()
    local = evaluate(BLOCK)
    assert remote["status"] == "ok"
    assert remote["accuracy"] == pytest.approx(local["accuracy"], abs=1e-6)


def test_a_reevaluation_draws_a_fresh_data_order_and_first_trainings_share_one():
    """Repeats are fresh in the weights and in the data's order and augmentation (before, only
    the weights: repeats were correlated with the first training); every first training sees
    the run's one order, so blocks compare on equal terms."""
    from blockqnn.result import evaluation_seed

    ev = lightning_evaluator("debug=smoke", "seed=3")
    dm = ev.datamodule

    def first_labels():
        return next(iter(dm.train_dataloader()))[1].tolist()

    block = [[1, 1, 3, 0, 0]]
    assert ev(block, repeat=1)["status"] == "ok"
    assert dm.order_seed == evaluation_seed(3, 1)
    fresh = first_labels()
    assert ev(block)["status"] == "ok" and dm.order_seed == 3
    common = first_labels()
    assert fresh != common
    assert ev([[1, 1, 1, 0, 0]])["status"] == "ok" and first_labels() == common


def test_the_process_launching_ddp_candidates_keeps_its_data_off_the_gpu(monkeypatch):
    """A local search with evaluator.devices=2 trains each candidate in torchrun's ranks; the
    master's own copy of the data (start-up checks, shapes) stays on the CPU, not on cuda:0.
    The ranks (LOCAL_RANK set) hold theirs on their own GPU."""
    ev = lightning_evaluator("debug=smoke", "trainer=gpu", "evaluator.devices=2")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert ev.device == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ev.device == "cuda:1"
    single = lightning_evaluator("debug=smoke", "trainer=gpu")
    monkeypatch.delenv("LOCAL_RANK")
    assert single.device == "cuda"
