"""In-memory tensor datasets and a low-overhead batch loader.

Small datasets (digits, Fashion-MNIST, CIFAR) are held whole as uint8/float tensors, on the GPU
when there is one, so that data loading never dominates a proxy evaluation. Augmentation of
such batches is vectorised (random crop with padding and horizontal flip, the customary CIFAR
augmentation), one random draw per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class TensorSplit:
    """Images (N, C, H, W) as uint8 or float, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(
        self, device, memory_format: torch.memory_format = torch.contiguous_format
    ) -> TensorSplit:
        """On ``device``, the images in ``memory_format`` (``torch.channels_last`` when the
        network runs NHWC: batches then come in its layout with no per-batch copy)."""
        return TensorSplit(
            self.images.to(device).contiguous(memory_format=memory_format), self.labels.to(device)
        )

    def subset(self, index: torch.Tensor) -> TensorSplit:
        return TensorSplit(self.images[index], self.labels[index])


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample random crop (zero padding) and horizontal flip of a batch (N, C, H, W), drawn
    with ``generator`` on the batch's device (no host-to-device copy or sync per batch). The
    result keeps the batch's memory format (channels_last in, channels_last out)."""
    n, _, h, w = x.shape
    dev = x.device
    if padding:
        padded = torch.nn.functional.pad(x, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None]).view(n, 1, h, 1)
        cols = (dx[:, None] + torch.arange(w, device=dev)[None]).view(n, 1, 1, w)
        batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # Gather whole pixels (N, H, W, C) from the NHWC storage: the result is NHWC too.
            x = padded.permute(0, 2, 3, 1)[
                batch.view(n, 1, 1), rows.view(n, h, 1), cols.view(n, 1, w)
            ].permute(0, 3, 1, 2)
        else:
            chan = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
            x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator, device=dev) < 0.5).view(n, 1, 1, 1)
        x = torch.where(mask, x.flip(3), x)
    return x


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): zero one ``size`` x ``size`` square per sample, its
    centre uniform over the image (the square may be clipped at the border)."""
    n, _, h, w = x.shape
    dev = x.device
    cy = torch.randint(0, h, (n, 1, 1), generator=generator, device=dev)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator, device=dev)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    top, left = cy - size // 2, cx - size // 2
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _dist() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (DDP), else (0, 1)."""

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TensorLoader:
    """Iterates (images, labels) batches of a :class:`TensorSplit`: shuffled with its own
    seeded generator, as float images in [0, 1] (the network normalises them itself),
    optionally augmented. A drop-in for a DataLoader in Lightning (it has ``__len__`` and
    ``__iter__``)."""

    def __init__(
        self,
        split: TensorSplit,
        batch_size: int,
        shuffle: bool = False,
        augment: dict | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ):
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment or {}
        self.drop_last = drop_last
        # On the data's device: shuffling and augmentation draw there, with no host copy or sync.
        self.generator = torch.Generator(device=split.images.device).manual_seed(seed)
        self.scale = 255.0 if split.images.dtype == torch.uint8 else 1.0

    def _indices(self) -> torch.Tensor | None:
        """This process's sample order. Under DDP each rank takes every world-th sample of
        one shared permutation; the training order is padded so every rank has the same
        number of batches (DDP needs that), evaluation is not (no sample counted twice)."""
        n = len(self.split)
        rank, world = _dist()
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.split.images.device)
        elif world == 1:
            return None
        else:
            order = torch.arange(n, device=self.split.images.device)
        if world > 1:
            if self.shuffle:
                per = -(-n // world)
                order = torch.cat([order, order[: per * world - n]])
            order = order[rank::world]
        return order

    def __len__(self) -> int:
        rank, world = _dist()
        n = len(self.split)
        if world > 1:
            n = -(-n // world) if self.shuffle else len(range(rank, n, world))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self._indices()
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                x, y = self.split.images[sl], self.split.labels[sl]
            else:
                idx = order[sl]
                x, y = self.split.images[idx], self.split.labels[idx]
            x = x.float() / self.scale
            if self.augment:
                x = random_crop_flip(
                    x,
                    int(self.augment.get("crop_padding", 0)),
                    bool(self.augment.get("flip", False)),
                    self.generator,
                )
                if self.augment.get("cutout"):
                    x = cutout(x, int(self.augment["cutout"]), self.generator)
            yield x, y
