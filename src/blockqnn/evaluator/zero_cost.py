"""Zero-cost scores of a network at initialisation, from one minibatch (no training): the
training-free proxies that BENCHMARKS.md "Proxy fidelity" scores against the final training.

* ``grad_norm``: the sum over weight tensors of the L2 norm of the loss's gradient
  (Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS").
* ``snip``: the sum of |weight x gradient| (connection sensitivity; Lee et al., ICLR 2019).
* ``synflow``: the sum of weight x gradient of R = sum(f(1)) with every weight replaced by its
  absolute value and a constant all-ones input (Tanaka et al., NeurIPS 2020); data-free. Batch
  norm in eval mode at initialisation is the identity, as the score intends; in float64, since the
  product of the absolute weights overflows float32 on deep networks.
* ``naswot``: the log-determinant of the kernel of binary ReLU activation codes over the batch
  (Mellor et al., ICML 2021, "Neural Architecture Search without Training").

Each leaves the network as it found it (weights, mode, gradients cleared)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

SCORES = ("grad_norm", "snip", "synflow", "naswot")


def _weights(net: nn.Module) -> list[torch.Tensor]:
    """The convolution and linear weights (what the papers score; biases and BN left out)."""
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _loss_grads(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    net.train()
    net.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    return [
        w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w)
        for w in _weights(net)
    ]


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(sum(g.norm() for g in _loss_grads(net, x, y)))


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    grads = _loss_grads(net, x, y)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(_weights(net), grads)))


def synflow(net: nn.Module, x: torch.Tensor) -> float:
    work = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
    work.zero_grad(set_to_none=True)
    work(torch.ones_like(x[:1], dtype=torch.float64)).sum().backward()
    return float(sum((w.detach() * w.grad).sum() for w in _weights(work) if w.grad is not None))


def naswot(net: nn.Module, x: torch.Tensor) -> float:
    n = len(x)
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def record(_module, _inputs, output):
        # Agreements of each pair of inputs' binary codes, summed layer by layer (never held).
        c = (output.detach().flatten(1) > 0).double().cpu()
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)

    hooks = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        net.train()
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def zero_cost_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Every score of :data:`SCORES` for ``net`` at its current weights on one batch."""
    state = copy.deepcopy(net.state_dict())  # batch-norm running statistics move in train mode
    mode = net.training
    try:
        return {
            "grad_norm": grad_norm(net, x, y),
            "snip": snip(net, x, y),
            "synflow": synflow(net, x),
            "naswot": naswot(net, x),
        }
    finally:
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)
        net.train(mode)
