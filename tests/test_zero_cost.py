"""Zero-cost scores (blockqnn.evaluator.zero_cost): each against its definition on networks
small enough to work out by hand, and the network left as it was."""

import math

import torch
import torch.nn as nn

from blockqnn.evaluator.zero_cost import grad_norm, naswot, snip, synflow, zero_cost_scores
from blockqnn.space.network import build_network
from blockqnn.space.presets import preset


def _linear_pair(w1, w2) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(w1))
        net[2].weight.copy_(torch.tensor(w2))
    return net


def test_synflow_is_twice_the_path_sum_of_a_two_layer_network():
    # R = |W2| |W1| 1; each layer's sum of w * dR/dw is R (R is linear in each layer), so 2R.
    w1, w2 = [[1.0, -2.0], [0.5, 3.0]], [[-1.0, 4.0]]
    r = 1.0 * (1.0 + 2.0) + 4.0 * (0.5 + 3.0)
    assert synflow(_linear_pair(w1, w2), torch.randn(5, 2)) == 2 * r


def test_grad_norm_and_snip_follow_their_definitions():
    torch.manual_seed(0)
    net = _linear_pair([[1.0, -2.0], [0.5, 3.0]], [[-1.0, 4.0]])
    net = nn.Sequential(*net, nn.Linear(1, 3, bias=False))
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    net.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    weights = [net[0].weight, net[2].weight, net[3].weight]
    want_norm = sum(float(w.grad.norm()) for w in weights)
    want_snip = sum(float((w.detach() * w.grad).abs().sum()) for w in weights)
    assert math.isclose(grad_norm(net, x, y), want_norm, rel_tol=1e-6)
    assert math.isclose(snip(net, x, y), want_snip, rel_tol=1e-6)


def test_naswot_tells_distinct_inputs_from_repeated_ones():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
    x = torch.randn(16, 4)
    distinct = naswot(net, x)
    assert math.isfinite(distinct) and distinct > 0
    # Two identical inputs share every code: the kernel is singular, the score -inf.
    assert naswot(net, torch.cat([x[:15], x[:1]])) == -math.inf


def test_scores_leave_the_network_as_it_was():
    torch.manual_seed(0)
    net = build_network(
        preset("inception"), num_classes=10, in_channels=1, input_size=12, width=4, stages=2
    )
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    first = zero_cost_scores(net, x, y)
    assert set(first) == {"grad_norm", "snip", "synflow", "naswot"}
    assert all(math.isfinite(v) for v in first.values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert zero_cost_scores(net, x, y) == first
