"""The ImageNet network: the template of experiment=final_imagenet (shapes, FLOPs at 224
against a hand count, one training step) and the search proxy on an image folder."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, compose_train


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """An ImageNet-layout folder: 2 classes, 6 training and 2 test images each, 48 x 40 PNGs."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny_imagenet")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                pixels[..., 0] = 200 if c == "cat" else 30  # a class signal in the red channel
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_final_imagenet_template_ends_at_7x7_and_its_flops_match_a_hand_count():
    from blockqnn.space.cost import count_flops, network_cost
    from blockqnn.space.network import build_network
    from blockqnn.space.presets import preset

    cfg = compose_train("experiment=final_imagenet")
    net_cfg = {k: v for k, v in cfg.network.items() if k not in ("drop_path", "channels_last")}
    assert cfg.network.params is None and cfg.network.flops is None  # a fixed width
    net_cfg = {k: net_cfg[k] for k in ("kind", "width", "blocks_per_stage", "stages")}
    assert net_cfg == {"kind": "imagenet", "width": 64, "blocks_per_stage": 2, "stages": 4}
    assert cfg.data.input_size == 224 and cfg.data.in_memory is False
    net = build_network(preset("plain"), num_classes=1000, in_channels=3, input_size=224, **net_cfg)
    with torch.no_grad():
        x = torch.zeros(1, 3, 224, 224)
        feats = net.features(net.stem(net.normalize(x)))
    assert feats.shape == (1, 512, 7, 7)  # 4 stages: 56, 28, 14, 7 pixels; widths 64 .. 512
    # By hand (a multiply-add = 2 FLOPs; BN, ReLU and pooling not counted):
    stem = 2 * 3 * 64 * 7 * 7 * 112 * 112
    stage0 = 2 * (2 * 64 * 64 * 9 * 56 * 56)
    later = sum(
        2 * (w // 2) * w * s * s + 2 * (2 * w * w * 9 * s * s)
        for w, s in ((128, 28), (256, 14), (512, 7))
    )
    head = 2 * 512 * 1000
    assert stem + stage0 + later + head == 2_125_275_136
    assert count_flops(net, (3, 224, 224)) == 2_125_275_136
    assert (
        network_cost(preset("plain"), num_classes=1000, in_channels=3, input_size=224, **net_cfg)[0]
        == 2_125_275_136
    )


def _run(script, folder, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / script), f"hydra.run.dir={folder}", *overrides],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_final_imagenet_trains_on_an_image_folder(tmp_path, tiny_folder):
    out = _run(
        "train.py",
        tmp_path / "run",
        "block=resnet_basic",
        "experiment=final_imagenet",
        f"data.root={tiny_folder}",
        "trainer=cpu",
        "data.num_workers=0",
        "network.width=8",
        "network.blocks_per_stage=1",
        "train.epochs=1",
        "train.batch_size=4",
        "logger=csv",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_acc"] <= 1.0
    # The ONNX export takes raw 224 x 224 images in [0, 1] and carries the folder's statistics.
    import onnxruntime as ort

    sess = ort.InferenceSession(
        str(tmp_path / "run" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    logits = sess.run(
        None, {"images": np.random.default_rng(1).random((2, 3, 224, 224), dtype=np.float32)}
    )[0]
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


@pytest.mark.slow
def test_search_proxy_on_an_image_folder(tmp_path, tiny_folder):
    out = _run(
        "search.py",
        tmp_path / "run",
        "experiment=search_image_folder",
        f"data.root={tiny_folder}",
        "trainer=cpu",
        "network.width=8",
        "network.blocks_per_stage=1",
        "recipe.epochs=1",
        "search.max_episodes=2",
        "space.max_layers=4",
        "logger=none",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best = json.loads((tmp_path / "run" / "best_block.json").read_text())
    assert best["accuracy"] is not None
