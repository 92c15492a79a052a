"""train.py: full training, exports, DDP, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from blockqnn.errors import BlockError, ConfigError
from blockqnn.final import CheckpointError, check_checkpoint, resolve_block
from blockqnn.space.presets import preset
from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parents[1]
FAST = ["logger=csv", "network.width=8", "network.blocks_per_stage=1"]


def train_cmd(run, *extra, logger="csv"):
    base = [f for f in FAST if not f.startswith("logger=")] + [f"logger={logger}"]
    return [sys.executable, str(ROOT / "train.py"), *base, f"hydra.run.dir={run}", *extra]


def test_resolve_block_forms(tmp_path):
    assert resolve_block("resnet_basic") == preset("resnet_basic")
    assert resolve_block("[[1,1,3,0,0]]").to_list() == [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]]
    assert resolve_block([[1, 1, 3, 0, 0]]) == resolve_block("[[1,1,3,0,0]]")
    best = tmp_path / "best_block.json"
    best.write_text(json.dumps({"nsc": [[1, 1, 5, 0, 0], [2, 7, 0, 0, 0]], "reward": 0.9}))
    assert resolve_block(str(best)).to_list()[0] == [1, 1, 5, 0, 0]
    with pytest.raises(ConfigError, match="presets: "):
        resolve_block("resnet_huge")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_block(str(tmp_path / "missing.json"))
    with pytest.raises(BlockError, match="layer 1"):
        resolve_block("[[1,1,2,0,0]]")


@pytest.mark.slow
def test_digits_training_metrics_and_exports_agree(tmp_path):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["HOME"] = str(tmp_path)  # no W&B login: offline
    out = subprocess.run(
        train_cmd(run, "train.epochs=2", logger="wandb"),
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # W&B (offline) logged the training and the block's picture.
    runs = list((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("files/media/images/block_*.png"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0.5 < metrics["test_acc"] <= 1.0
    assert metrics["params"] > 0 and metrics["flops"] > 0 and metrics["wall_time"] > 0
    assert json.loads((run / "block.json").read_text())["nsc"] == preset("resnet_basic").to_list()
    # The Lightning model from the checkpoint, TorchScript and ONNX give the same predictions.
    from blockqnn.evaluator.module import BlockClassifier

    model = BlockClassifier.load_from_checkpoint(
        run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu"
    ).eval()
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        ref = model(x).numpy()
        ts = torch.jit.load(str(run / "model.torchscript.pt"))(x).numpy()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(ts, ref, atol=1e-4)
    np.testing.assert_allclose(onnx_out, ref, atol=1e-4)
    assert (onnx_out.argmax(1) == ref.argmax(1)).all()
    # The exports carry the normalisation: raw test images (sklearn's digits, 0..16, divided by
    # 16: float in [0, 1], channels first) give the PyTorch model's test accuracy.
    from blockqnn.data.sources import _digits

    raw = _digits({})[1]()
    images = raw.images.numpy()
    assert images.min() >= 0 and images.max() <= 1
    onnx_acc = float((sess.run(None, {"images": images})[0].argmax(1) == raw.labels.numpy()).mean())
    assert onnx_acc == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert (
        float(model.net.normalize.std.min()) < 0.9
    )  # the training split's statistics, not the identity


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path):
    """train.batch_size is the global batch: each of the 2 processes trains on half of it,
    over its half of the data."""
    run, seen = tmp_path / "run", tmp_path / "batches"
    out = subprocess.run(
        train_cmd(
            run,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "train.epochs=3",
            "train.export=false",
            "train.batch_size=64",
            "+callbacks.record._target_=tests.conftest.BatchRecorder",
            f"+callbacks.record.folder={seen}",
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["test_acc"] > 0.6
    ranks = [json.loads((seen / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    for r in ranks:
        assert max(r["sizes"]) == 32  # 64 / 2 processes
    assert len(ranks[0]["sizes"]) == len(ranks[1]["sizes"])  # each rank one half of the data
    single = tmp_path / "single"
    one = subprocess.run(
        train_cmd(
            tmp_path / "one",
            "train.epochs=1",
            "train.export=false",
            "train.batch_size=64",
            "+callbacks.record._target_=tests.conftest.BatchRecorder",
            f"+callbacks.record.folder={single}",
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    alone = json.loads((single / "rank0.json").read_text())["sizes"]
    assert max(alone) == 64 and len(ranks[0]["sizes"]) == 3 * len(
        alone
    )  # same steps per epoch as one process


def test_ddp_batch_that_does_not_divide_is_refused(tmp_path):
    out = subprocess.run(
        train_cmd(
            tmp_path / "run",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "train.batch_size=63",
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (
        out.returncode == 2
        and "train.batch_size=63 is the global batch and must divide" in out.stderr
    )


@pytest.mark.slow
def test_interrupted_training_resumes_and_finishes(tmp_path):
    run, gate = tmp_path / "run", tmp_path / "gate"
    gate.touch()  # the training waits at its third epoch while this exists: killed there
    hold = ["+callbacks.hold._target_=tests.conftest.HoldAtEpoch", f"+callbacks.hold.gate={gate}"]
    cmd = train_cmd(run, "train.epochs=4", "train.export=false", *hold, "+callbacks.hold.epoch=2")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "checkpoints").glob("epoch001*.ckpt")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    gate.unlink()
    proc.wait()
    assert (run / "checkpoints" / "last.ckpt").exists() and not (run / "metrics.json").exists()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["resumed_from"].endswith("last.ckpt")


@pytest.mark.parametrize(
    "override,message",
    [
        ("block=[[1,1,2,0,0]]", "layer 1: kernel 2 is not allowed"),
        ("block=resnet_huge", "not a preset"),
        ("train.ckpt_path=/nonexistent/last.ckpt", "does not exist"),
        ("train.batch_size=0", "train.batch_size=0 must be >= 1"),
        ("+trainer.max_epochs=3", "trainer.max_epochs is set by train.py"),
    ],
)
def test_bad_input_gives_one_message(tmp_path, override, message):
    """train.py's own checks, run in this process (its exit and message are the point)."""
    code, err = run_entry("train", tmp_path / "run", *FAST, override, "train.epochs=1")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_bad_input_hydra_refuses_while_composing(tmp_path):
    out = subprocess.run(
        train_cmd(tmp_path / "run", "train.optim.lr=0.1"), capture_output=True, text=True
    )
    assert out.returncode != 0 and "use model/optimizer" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "run").exists()


def test_mismatched_checkpoint_is_refused(tmp_path):
    import lightning as L

    from blockqnn.evaluator.module import BlockClassifier

    model = BlockClassifier(
        preset("plain").to_list(),
        {"num_classes": 3, "in_channels": 1, "width": 4, "blocks_per_stage": 1},
        {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        None,
    )
    trainer = L.Trainer(max_epochs=0, logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.strategy.connect(model)
    path = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(path)
    check_checkpoint(path, preset("plain"))
    with pytest.raises(CheckpointError, match="is for block"):
        check_checkpoint(path, preset("resnet_basic"))
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        check_checkpoint(tmp_path / "junk.ckpt", preset("plain"))


def test_train_config_composes_the_recipe_and_the_final_experiments():
    from tests.conftest import compose_train

    cfg = compose_train()
    assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr == 2e-3
    assert cfg.model.scheduler.warmup_t == 0 and cfg.model.scheduler.t_initial == cfg.train.epochs
    final = compose_train("experiment=final_cifar100")
    assert final.model.optimizer._target_ == "torch.optim.SGD" and final.model.optimizer.lr == 0.1
    assert (
        final.model.scheduler.warmup_t == 5
        and final.train.epochs == 300
        and final.data.name == "cifar100"
    )
    assert final.data.augment.cutout == 16 and final.network.width == 32


def test_ema_weights_are_the_ones_validated_tested_and_saved(tmp_path):
    """train.ema: Lightning's EMAWeightAveraging. Bug caught: the average kept but never swapped
    in (then the run's metrics equal a run without it, same seed and data order)."""
    runs = {}
    for name, extra in (("plain", []), ("ema", ["train.ema=0.9"])):
        code, err = run_entry(
            "train",
            tmp_path / name,
            *FAST,
            "block=plain",
            "train.epochs=2",
            "train.export=false",
            *extra,
        )
        assert code == 0, err[-2000:]
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert runs["ema"]["val_acc"] != runs["plain"]["val_acc"]
    assert runs["ema"]["test_acc"] != runs["plain"]["test_acc"]
    ckpt = torch.load(tmp_path / "ema" / "checkpoints" / "last.ckpt", weights_only=False)
    assert any("Averag" in k for k in ckpt.get("callbacks", {}))  # resumable: the average is saved


def test_a_bad_test_folder_is_refused_before_training(tmp_path):
    """train.py on an image folder whose test/ holds an unreadable file or a class train/ lacks
    stops at once, naming it (before: after the whole training, when the test set was read)."""
    from PIL import Image

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(2):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    d / f"{i}.png"
                )
    (root / "test" / "c1" / "broken.png").write_bytes(b"not an image")
    folder = ["data=image_folder", f"data.root={root}", "data.input_size=12", "train.epochs=50"]
    code, err = run_entry("train", tmp_path / "run", *FAST, *folder)
    assert code == 2 and "broken.png" in err and "data.skip_unreadable=true" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    (root / "test" / "c1" / "broken.png").unlink()
    (root / "test" / "c9").mkdir()
    code, err = run_entry("train", tmp_path / "run2", *FAST, *folder)
    assert code == 2 and "c9" in err
