"""Networks built from blocks: shapes, gradients, FLOPs, drawings, presets."""

import random

import pytest
import torch
from hypothesis import given, settings

from blockqnn.errors import BlockError, ConfigError
from blockqnn.space.cost import count_flops, count_params
from blockqnn.space.draw import draw_block
from blockqnn.space.network import BlockModule, build_network
from blockqnn.space.nsc import Block, random_block
from blockqnn.space.presets import PRESETS, preset
from tests.helpers import blocks


def forward_backward(net, shape, classes):
    x = torch.randn(shape)
    y = net(x)
    assert y.shape == (shape[0], classes)
    assert torch.isfinite(y).all()
    y.logsumexp(1).mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@settings(max_examples=25, deadline=None)
@given(blocks(max_layers=23))
def test_every_valid_block_builds_and_trains(block):
    torch.manual_seed(0)
    cifar = build_network(block, num_classes=10, in_channels=3, width=8, blocks_per_stage=1)
    forward_backward(cifar, (2, 3, 32, 32), 10)
    digits = build_network(block, num_classes=10, in_channels=1, width=8, blocks_per_stage=1)
    forward_backward(digits, (2, 1, 8, 8), 10)


def test_23_layer_block_trains_one_step():
    block = random_block(random.Random(3), max_layers=23, min_layers=23)
    assert len(block) == 23
    net = build_network(block, num_classes=10, in_channels=3, width=16, blocks_per_stage=2)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    before = [p.detach().clone() for p in net.parameters()]
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_imagenet_network_and_sizes():
    net = build_network(
        preset("resnet_basic"),
        kind="imagenet",
        num_classes=7,
        width=8,
        stages=4,
        blocks_per_stage=1,
        input_size=64,
    )
    forward_backward(net, (2, 3, 64, 64), 7)
    with pytest.raises(ConfigError, match="unknown network kind"):
        build_network(preset("plain"), kind="mobile")


def test_width_doubles_and_spatial_size_halves():
    net = build_network(preset("resnet_basic"), width=16, blocks_per_stage=2, stages=3)
    shapes = []
    hook = lambda m, i, o: shapes.append(tuple(o.shape[1:]))  # noqa: E731
    for m in net.features:
        if isinstance(m, BlockModule):
            m.register_forward_hook(hook)
    net(torch.randn(1, 3, 32, 32))
    assert shapes == [(16, 32, 32)] * 2 + [(32, 16, 16)] * 2 + [(64, 8, 8)] * 2


def test_one_conv_block_flops_match_hand_calculation():
    c, h, w = 16, 8, 8
    block = BlockModule(Block.parse([[1, 1, 3, 0, 0]]), in_channels=c, width=c)
    assert count_flops(block, (c, h, w)) == 2 * h * w * c * c * 3 * 3
    assert count_params(block) == c * c * 9 + 2 * c
    # A 5x5 conv then a 1x1 conv on different input channels (1x1 projection first).
    two = BlockModule(Block.parse([[1, 1, 5, 0, 0], [2, 1, 1, 1, 0]]), in_channels=4, width=c)
    assert count_flops(two, (4, h, w)) == 2 * h * w * (4 * c + c * c * 25 + c * c)


def test_pool_only_block_has_no_conv_flops():
    block = BlockModule(Block.parse([[1, 2, 3, 0, 0], [2, 3, 3, 1, 0]]), 8, 8)
    assert count_flops(block, (8, 8, 8)) == 0


def test_draw_png_and_svg(tmp_path):
    files = draw_block(preset("inception"), tmp_path / "block.png")
    assert [f.suffix for f in files] == [".png", ".svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = files[1].read_text()
    assert "5: conv 5x5" in svg and "6: max pool 3x3" in svg


def test_presets_are_valid_and_documented():
    for name, entry in PRESETS.items():
        assert entry["source"]
        assert preset(name).to_list() == entry["nsc"]
    with pytest.raises(ConfigError, match="presets: "):
        preset("nope")


def test_build_network_refuses_bad_block():
    with pytest.raises(BlockError, match="layer 1"):
        build_network("[[1,1,2,0,0]]")


@pytest.mark.parametrize(
    "nsc",
    [
        [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 1, 3, 2, 0], [4, 7, 0, 0, 0]],  # a chain: one path
        "resnet_basic",  # the block's output is its add
        [
            [1, 1, 3, 0, 0],
            [2, 2, 3, 0, 0],
            [3, 7, 0, 0, 0],
        ],  # two leaves joined by the output concat
    ],
)
def test_drop_path_never_blanks_a_sample(nsc):
    from blockqnn.space.network import BlockModule
    from blockqnn.space.presets import preset

    torch.manual_seed(0)
    block = preset(nsc) if isinstance(nsc, str) else Block.parse(nsc)
    module = BlockModule(block, 8, 8, drop_path=0.9).train()
    x = torch.randn(256, 8, 6, 6)
    for _ in range(5):
        out = module(x)
        assert (out.flatten(1).abs().amax(1) > 0).all()  # no sample's output is all zeros
    if len(block.leaves) == 1 and all(len(la.preds) == 1 for la in block.body):
        torch.manual_seed(1)
        a = module(x)
        torch.manual_seed(2)
        assert torch.equal(a, module(x))  # a chain has no join: drop-path leaves it alone
    else:
        torch.manual_seed(1)
        a = module(x)
        torch.manual_seed(2)
        assert not torch.equal(a, module(x))  # at a join, branches are dropped at random


def test_branch_drop_keeps_one_input_per_sample_and_the_expectation():
    from blockqnn.space.ops import BranchDrop

    torch.manual_seed(0)
    drop = BranchDrop(0.5).train()
    xs = [torch.ones(20000, 1), torch.ones(20000, 1)]
    a, b = drop(xs)
    assert ((a + b) > 0).all()
    assert float(a.mean()) == pytest.approx(
        1.0 + 0.25, abs=0.05
    )  # 1/(1-p) scaling, plus the forced survivors
    assert drop.eval()(xs) is xs


def _overlap(a, b, w, h):
    return abs(a[0] - b[0]) < w and abs(a[1] - b[1]) < h


def test_drawings_of_a_23_layer_block_and_a_network_have_no_overlapping_boxes(tmp_path):
    """#28: boxes laid out on a grid never overlap; the network drawing lists its stages; both
    drawings are written as PNG and SVG with a legend and formatted numbers."""
    from blockqnn.agent import RandomAgent
    from blockqnn.space.draw import (
        BOX_H,
        BOX_W,
        NET_BOX_W,
        block_layout,
        draw_block,
        draw_network,
        network_layout,
    )
    from blockqnn.space.presets import preset

    agent = RandomAgent(max_layers=23, seed=5)
    block = max((agent.ask() for _ in range(60)), key=lambda b: len(b.body))
    assert len(block.body) == 23
    g, pos = block_layout(block)
    nodes = list(pos)
    assert len(nodes) == 25  # input, 23 layers, output
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            assert not _overlap(pos[a], pos[b], BOX_W, BOX_H), (a, b)
    for a, b in g.edges():  # every edge points down, from its source's row to a later one
        assert pos[a][1] > pos[b][1]
    spec = {
        "kind": "cifar",
        "width": 32,
        "blocks_per_stage": 2,
        "stages": 3,
        "num_classes": 10,
        "in_channels": 3,
        "input_size": 32,
    }
    boxes, npos = network_layout(preset("inception"), spec)
    labels = [t for t, _ in boxes]
    assert labels[1].startswith("stem") and "stage 3: block x 2, F=128, 8x8" in labels
    assert labels.count("max pool /2") == 2 and labels[-1] == "linear -> 10 classes"
    for i, a in enumerate(npos):
        for b in npos[i + 1 :]:
            assert not _overlap(a, b, NET_BOX_W, BOX_H)
    files = draw_block(block, tmp_path / "b.png", title="reward 0.9861")
    files += draw_network(preset("inception"), spec, tmp_path / "n.png")
    assert [f.suffix for f in files] == [".png", ".svg", ".png", ".svg"] and all(
        f.stat().st_size for f in files
    )
    svg = (tmp_path / "b.svg").read_text()
    assert (
        "ReLU-conv-BN" in svg and "output = concat" in svg
    )  # the legend, the output's concatenation
    assert "MFLOPs per image" in (tmp_path / "n.svg").read_text()
