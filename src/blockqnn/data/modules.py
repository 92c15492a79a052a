"""LightningDataModules for the search and for final training.

Every module holds out a seeded validation split from the training set; during a search only
``train_dataloader`` and ``val_dataloader`` are used, and the test split is never read
(``test_dataloader`` loads it lazily, on first use, for final training only).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from blockqnn.config import build
from blockqnn.data.sources import (
    SOURCE_KEYS,
    SOURCES,
    RemapLabels,
    check_test_folder,
    test_label_map,
)
from blockqnn.data.tensors import TensorLoader, TensorSplit
from blockqnn.errors import ConfigError


def resized(split: TensorSplit, size: int | None) -> TensorSplit:
    """The images at ``size`` x ``size`` (antialiased bilinear; uint8 stays uint8), for cheaper
    proxies on smaller images (``data.resize``)."""
    if size is None or tuple(split.images.shape[-2:]) == (size, size):
        return split
    x = torch.nn.functional.interpolate(
        split.images.float(),
        size=(size, size),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    if split.images.dtype == torch.uint8:
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return TensorSplit(x, split.labels)


def _check_subset(subset: Any) -> None:
    if subset is not None and (
        isinstance(subset, bool) or not isinstance(subset, int) or subset < 2
    ):
        raise ConfigError(
            f"data.subset={subset!r} must be null (all images) or a whole number of images >= 2"
        )


def stratified_subset(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` examples drawn without replacement so that every class keeps its share
    (largest-remainder rounding), in a seeded random order. For proxy searches on part of a
    large training set (``data.subset``)."""
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / len(labels)
    take = exact.floor().long()
    short = n - int(take.sum())
    if short:
        order = torch.argsort(exact - take, descending=True, stable=True)
        take[order[:short]] += 1
    picked = []
    for c, k in zip(classes.tolist(), take.tolist()):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=generator)[:k]])
    index = torch.cat(picked)
    return index[torch.randperm(len(index), generator=generator)]


class TensorDataModule(L.LightningDataModule):
    """A data module over an in-memory dataset, with a seeded validation split."""

    def __init__(
        self,
        name: str,
        # each data set's own, in conf/data/<name>.yaml (one home, so no defaults here):
        val_fraction: float,
        augment: dict | None,
        batch_size: int = 256,
        seed: int = 0,
        device: str | torch.device = "cpu",
        eval_batch_size: int | None = None,
        subset: int | None = None,
        resize: int | None = None,
        **source_cfg: Any,
    ):
        super().__init__()
        if name not in SOURCES:
            raise ConfigError(f"unknown data {name!r}; known: {', '.join(SOURCES)}")
        unknown = sorted(set(source_cfg) - set(SOURCE_KEYS[name]))
        if unknown:
            known = [
                "val_fraction",
                "subset",
                "resize",
                "augment",
                "eval_batch_size",
                *SOURCE_KEYS[name],
            ]
            raise ConfigError(
                f"data.{unknown[0]} is not a key of data={name}; its keys: {', '.join(known)}"
            )
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction={val_fraction} must be in (0, 1)")
        _check_subset(subset)
        if resize is not None and (
            isinstance(resize, bool) or not isinstance(resize, int) or resize < 4
        ):
            raise ConfigError(
                f"data.resize={resize!r} must be null (native size) or a side of at least 4 pixels"
            )
        self.subset = subset
        self.resize = resize
        self.name = name
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or max(batch_size, 512))
        self.seed = int(seed)
        # The training data's order and augmentation draws: the split's seed, unless an
        # evaluation sets its own (a re-evaluation's fresh seed: evaluator/training.py).
        self.order_seed = self.seed
        self.val_fraction = float(val_fraction)
        self.augment = dict(augment or {})
        self.device = torch.device(device)
        self.source_cfg = dict(source_cfg)
        self._train: TensorSplit | None = None
        self._val: TensorSplit | None = None
        self._test_loader: Callable[[], TensorSplit] | None = None
        self._test: TensorSplit | None = None
        self.test_reads = 0  # how often the test split was read (must stay 0 in a search)
        # The images' layout on the device: channels_last when the network is (set before setup).
        self.memory_format = torch.contiguous_format

    # Lightning calls setup() on every process; loading is cached so it happens once.
    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        full, self._test_loader = SOURCES[self.name](self.source_cfg)
        g = torch.Generator().manual_seed(self.seed)
        if self.subset is not None:
            if self.subset > len(full):
                raise ConfigError(
                    f"data.subset={self.subset} is larger than the {len(full)} labelled "
                    f"training images of data={self.name}"
                )
            full = full.subset(stratified_subset(full.labels, self.subset, g))
        full = resized(full, self.resize)
        order = torch.randperm(len(full), generator=g)
        n_val = max(1, int(round(len(full) * self.val_fraction)))
        train, val = full.subset(order[n_val:]), full.subset(order[:n_val])
        # Normalisation statistics from the training part only (the network applies them).
        sample = train.images[:20000].float()
        if train.images.dtype == torch.uint8:
            sample = sample / 255.0
        self.mean = sample.mean(dim=(0, 2, 3))
        self.std = sample.std(dim=(0, 2, 3)).clamp_min(1e-6)
        self._train, self._val = (
            train.to(self.device, self.memory_format),
            val.to(self.device, self.memory_format),
        )

    @property
    def num_classes(self) -> int:
        self.setup()
        return int(max(self._train.labels.max(), self._val.labels.max()).item()) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        self.setup()
        return tuple(self._train.images.shape[1:])  # type: ignore[return-value]

    def check_test(self) -> None:
        """What final training checks of the test split before it trains (image folders:
        their classes and files); the test images themselves are read at the end only."""
        if self.name == "image_folder":
            check_test_folder(
                Path(self.source_cfg["root"]), bool(self.source_cfg.get("skip_unreadable"))
            )

    def train_dataloader(self) -> TensorLoader:
        self.setup()
        return TensorLoader(
            self._train, self.batch_size, shuffle=True, augment=self.augment, seed=self.order_seed
        )

    def val_dataloader(self) -> TensorLoader:
        self.setup()
        return TensorLoader(self._val, self.eval_batch_size)

    def test_dataloader(self) -> TensorLoader:
        self.setup()
        if self._test is None:
            self.test_reads += 1
            self._test = resized(self._test_loader(), self.resize).to(
                self.device, self.memory_format
            )
        return TensorLoader(self._test, self.eval_batch_size)


def image_folder_datamodule(
    in_memory: bool,
    num_workers: int,
    batch_size: int,
    seed: int,
    augment: dict | None,
    device: str = "cpu",
    **cfg: Any,
):
    """``data=image_folder``: held in memory (``in_memory``), or streamed from disk with
    DataLoader workers (ImageNet-size data; its transforms v2 do their own augmentation)."""
    if not in_memory:
        if cfg.pop("resize", None) is not None:
            raise ConfigError(
                "data.resize is for in-memory data; streamed image folders use data.input_size"
            )
        # Streamed folders are not decoded up front (ImageNet: 1.28M files); the DataLoader
        # raises on an unreadable file when it reaches it.
        cfg.pop("skip_unreadable", None)
        cfg.pop("cache_dir", None)  # streamed folders decode as they read: nothing to share
        return StreamingImageFolder(
            batch_size=batch_size, seed=seed, num_workers=num_workers, **cfg
        )
    return TensorDataModule(batch_size=batch_size, seed=seed, device=device, augment=augment, **cfg)


def store_as(dm, channels_last: bool):
    """Hold an in-memory data module's images in the network's layout (before its setup);
    streamed and other data modules are left as they are (the network converts their batches)."""
    if channels_last and hasattr(dm, "memory_format"):
        dm.memory_format = torch.channels_last
    return dm


def build_datamodule(data_cfg: dict, batch_size: int, seed: int, device: str = "cpu"):
    """The data module of a ``data`` config node (its ``_target_``; without one, the module
    its ``name`` calls for)."""

    cfg = dict(data_cfg)
    if "_target_" not in cfg:
        cfg["_target_"] = (
            f"{__name__}.image_folder_datamodule"
            if "in_memory" in cfg
            else f"{__name__}.TensorDataModule"
        )
    return build(cfg, "data", batch_size=batch_size, seed=seed, device=device)


STATS_IMAGES = 256  # training images a streamed folder's normalisation statistics are measured on


class StreamingImageFolder(L.LightningDataModule):
    """An ImageNet-layout folder streamed from disk (``data=image_folder data.in_memory=false``):
    torchvision ImageFolder with transforms v2 (RandomResizedCrop and flip for training,
    resize and centre crop for evaluation), a seeded validation split of the training folder,
    and DataLoader workers. For data sets too large to hold in memory."""

    def __init__(
        self,
        root: str,
        batch_size: int,
        seed: int,
        val_fraction: float,
        input_size: int,
        num_workers: int,
        eval_batch_size: int | None = None,
        subset: int | None = None,
        name: str = "image_folder",
    ):
        # No defaults for the data's settings: their one home is conf/data/image_folder.yaml.
        super().__init__()
        _check_subset(subset)
        self.subset = subset
        self.root = Path(root or "")
        if not root or not (self.root / "train").is_dir():
            raise ConfigError(
                f"data.root={root}: expected an ImageNet-style folder with "
                "train/<class>/<image> and test/<class>/<image>"
            )
        self.batch_size, self.seed, self.val_fraction = (
            int(batch_size),
            int(seed),
            float(val_fraction),
        )
        self.order_seed = self.seed  # the training order's seed (TensorDataModule.order_seed)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.size, self.num_workers = int(input_size), int(num_workers)
        self.test_reads = 0
        self._train = None
        self.mean = self.std = None

    def _transforms(self, train: bool):
        # lazy: torchvision only for image folders and CIFAR
        from torchvision.transforms import v2

        if train:
            steps = [v2.RandomResizedCrop(self.size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            steps = [
                v2.Resize(int(round(self.size * 256 / 224)), antialias=True),
                v2.CenterCrop(self.size),
            ]
        return v2.Compose([v2.ToImage(), *steps, v2.ToDtype(torch.float32, scale=True)])

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        # lazy: torchvision only for image folders and CIFAR
        # lazy: torchvision only for image folders and CIFAR
        from torchvision.datasets import ImageFolder

        train_view = ImageFolder(str(self.root / "train"), transform=self._transforms(True))
        eval_view = ImageFolder(str(self.root / "train"), transform=self._transforms(False))
        g = torch.Generator().manual_seed(self.seed)
        if self.subset is not None:
            if self.subset > len(train_view):
                raise ConfigError(
                    f"data.subset={self.subset} is larger than the {len(train_view)} images "
                    f"under {self.root / 'train'}"
                )
            kept = stratified_subset(torch.tensor(train_view.targets), self.subset, g)
        else:
            kept = torch.arange(len(train_view))
        order = kept[torch.randperm(len(kept), generator=g)].tolist()
        n_val = max(1, int(round(len(order) * self.val_fraction)))
        self._train, self._val = Subset(train_view, order[n_val:]), Subset(eval_view, order[:n_val])
        self.classes = len(train_view.classes)
        # The in-memory convention: per-channel statistics of the training split, here of the
        # evaluation view of up to STATS_IMAGES of its images (the network applies them).
        sample = torch.stack([eval_view[i][0] for i in order[n_val:][:STATS_IMAGES]])
        self.mean, self.std = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)).clamp_min(1e-6)

    @property
    def num_classes(self) -> int:
        self.setup()
        return self.classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def _loader(self, ds, shuffle: bool, batch: int):
        return DataLoader(
            ds,
            batch_size=batch,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.order_seed) if shuffle else None,
        )

    def train_dataloader(self):
        self.setup()
        return self._loader(self._train, True, self.batch_size)

    def val_dataloader(self):
        self.setup()
        return self._loader(self._val, False, self.eval_batch_size)

    def check_test(self) -> None:
        """Before a final training: the test folder's classes are training classes (its files
        are not decoded up front: a streamed folder can hold ImageNet's 50,000)."""
        test_label_map(self.root)

    def test_dataloader(self):
        # lazy: torchvision only for image folders and CIFAR
        from torchvision.datasets import ImageFolder

        self.test_reads += 1
        labels = RemapLabels(test_label_map(self.root))  # test classes by the training set's labels
        return self._loader(
            ImageFolder(
                str(self.root / "test"), transform=self._transforms(False), target_transform=labels
            ),
            False,
            self.eval_batch_size,
        )
