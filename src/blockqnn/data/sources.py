"""The data sets' readers: each returns (train, test) TensorSplits, the test split possibly a
callable that loads it on first use (it is read for final training only). ``SOURCES`` names
them; ``SOURCE_KEYS`` lists the config keys each reads (anything else in ``data.*`` is refused)."""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blockqnn.data.cache import cached_split
from blockqnn.data.tensors import TensorSplit
from blockqnn.errors import ConfigError

# ----------------------------------------------------------------------------- sources
# A source returns (train, test) TensorSplits (test may be a callable, loaded lazily).


def _digits(cfg: dict) -> tuple[TensorSplit, Callable[[], TensorSplit]]:
    # lazy: scikit-learn only on the predictor/surrogate/digits paths
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    # digits has no official test split: a fixed (seed-independent) stratified 20% is held out.
    g = torch.Generator().manual_seed(20171)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_mask[idx[: len(idx) // 5]] = True
    train = TensorSplit(images[~test_mask], labels[~test_mask])
    return train, lambda: TensorSplit(images[test_mask], labels[test_mask])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ConfigError(f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / "fashion-mnist" / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise ConfigError(
        f"data.root={root}: no {stem}[.gz] there (Fashion-MNIST IDX files; on Debian: "
        "apt-get install dataset-fashion-mnist, root /usr/share/datasets/fashion-mnist)"
    )


def _fashion_mnist(cfg: dict):
    root = Path(cfg.get("root") or "/usr/share/datasets/fashion-mnist")
    if not root.is_dir():
        raise ConfigError(f"data.root={root} is not a folder (Fashion-MNIST IDX files)")

    def split(prefix: str) -> TensorSplit:
        images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
        return TensorSplit(
            torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
        )

    return split("train"), lambda: split("t10k")


def _cifar(cls_name: str):
    def load(cfg: dict):
        # lazy: torchvision only for image folders and CIFAR
        import torchvision

        base = getattr(torchvision.datasets, cls_name)
        root = cfg.get("root")
        if not root or root == "???":
            raise ConfigError(
                f"data.root is required for data={cls_name.lower()}: the folder holding "
                f"torchvision's {cls_name} files (data.download=true fetches them there)"
            )
        verify = bool(cfg.get("verify", True))

        class Checked(base):  # type: ignore[misc, valid-type]
            # data.verify=false checks that the files exist, not their md5 sums.
            if not verify:
                train_list = [[name, None] for name, _ in base.train_list]
                test_list = [[name, None] for name, _ in base.test_list]
                meta = {**base.meta, "md5": None}

        def split(train: bool) -> TensorSplit:
            try:
                ds = Checked(root, train=train, download=bool(cfg.get("download", False)))
            except RuntimeError as exc:
                raise ConfigError(
                    f"data.root={root}: {exc} (torchvision's {cls_name} python format; "
                    "data.download=true fetches it)"
                ) from None
            images = (
                torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            )
            return TensorSplit(images, torch.tensor(ds.targets, dtype=torch.int64))

        return split(True), lambda: split(False)

    return load


def test_label_map(root: Path) -> list[int]:
    """For each class folder of ``root/test`` (in ImageFolder's sorted order), the label the
    training set gives that class (``root/train``'s own order): a test folder that lacks a
    class keeps every other class's label. A test class with no training folder is refused."""
    train = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    test_dir = root / "test"
    test = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    unknown = [c for c in test if c not in train]
    if unknown:
        raise ConfigError(
            f"{test_dir} has class folder(s) that {root / 'train'} lacks: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} (a test class must be a "
            "training class)"
        )
    return [train.index(c) for c in test]


def check_test_folder(root: Path, skip_unreadable: bool = False) -> None:
    """Before a final training: ``root/test``'s classes are training classes
    (:func:`test_label_map`) and, unless ``skip_unreadable``, every file decodes; a bad one is
    refused now, naming it, instead of after hours of training when the test set is read."""
    # lazy: PIL only for image folders
    from PIL import Image

    test_label_map(root)
    if skip_unreadable or not (root / "test").is_dir():
        return
    bad = []
    for path in sorted(p for p in (root / "test").rglob("*") if p.is_file()):
        try:
            with Image.open(path) as img:
                img.load()
        except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
            bad.append(f"{path} ({type(exc).__name__})")
    if bad:
        raise ConfigError(
            f"{len(bad)} unreadable image file(s) under {root / 'test'}: "
            + ", ".join(bad[:5])
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; remove them, or set data.skip_unreadable=true to leave them out"
        )


class RemapLabels:
    """A picklable target transform: ImageFolder's label -> the training set's label."""

    def __init__(self, mapping: list[int]):
        self.mapping = list(mapping)

    def __call__(self, target: int) -> int:
        return self.mapping[target]


def _image_folder_split(
    folder: Path, size: int, skip_unreadable: bool = False, labels: list[int] | None = None
) -> TensorSplit:
    """Decode a torchvision ImageFolder into uint8 tensors of ``size`` x ``size``. Files that
    cannot be decoded are refused in one message naming them, or with ``skip_unreadable``
    left out (with a count on the log). ``labels``: each class folder's label (the test split's
    mapped through the training set's classes, :func:`test_label_map`)."""

    # lazy: torchvision only for image folders and CIFAR
    import torchvision

    # lazy: PIL only for image folders
    from PIL import Image

    # lazy: torchvision only for image folders and CIFAR
    from torchvision.transforms import v2

    resize = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True)])
    ds = torchvision.datasets.ImageFolder(str(folder), transform=resize)
    if len(ds) == 0:
        raise ConfigError(f"{folder} has no images")
    images = torch.empty((len(ds), 3, size, size), dtype=torch.uint8)
    kept, bad = [], []
    for i in range(len(ds)):
        try:
            img = ds[i][0]
        except (OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
            bad.append((ds.samples[i][0], type(exc).__name__))
            continue
        images[len(kept)] = img if img.shape[0] == 3 else img.expand(3, -1, -1)
        kept.append(ds.targets[i] if labels is None else labels[ds.targets[i]])
    if bad and not skip_unreadable:
        names = ", ".join(f"{p} ({why})" for p, why in bad[:5]) + (
            f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        )
        raise ConfigError(
            f"{len(bad)} unreadable image file(s) under {folder}: {names}; remove them, or set "
            "data.skip_unreadable=true to leave them out"
        )
    if bad:
        logging.getLogger("blockqnn.data").warning(
            "skipped %d unreadable image file(s) under %s (data.skip_unreadable=true)",
            len(bad),
            folder,
        )
    if not kept:
        raise ConfigError(f"{folder} has no readable images")
    return TensorSplit(images[: len(kept)].clone(), torch.tensor(kept, dtype=torch.int64))


def _image_folder(cfg: dict):
    root = Path(cfg.get("root") or "")
    if cfg.get("root") in (None, "", "???") or not (root / "train").is_dir():
        raise ConfigError(
            f"data.root={cfg.get('root')}: expected an ImageNet-style folder with "
            "train/<class>/<image> and test/<class>/<image>"
        )
    size, skip, cache = (
        int(cfg["input_size"]),
        bool(cfg.get("skip_unreadable")),
        cfg.get("cache_dir"),
    )

    def split(name: str, labels: list[int] | None = None) -> TensorSplit:
        return cached_split(
            cache,
            root / name,
            lambda: _image_folder_split(root / name, size, skip, labels),
            size=size,
            skip_unreadable=skip,
            labels=labels,
        )

    return split("train"), lambda: split("test", test_label_map(root))


def _synthetic(cfg: dict):
    # Every key is required: its values live in conf/data/synthetic.yaml only.
    missing = [k for k in SOURCE_KEYS["synthetic"] if k not in cfg]
    if missing:
        raise ConfigError(
            f"data.{missing[0]}: no value set (data=synthetic needs {', '.join(SOURCE_KEYS['synthetic'])})"
        )
    g = torch.Generator().manual_seed(int(cfg["data_seed"]))
    c, s, k = int(cfg["in_channels"]), int(cfg["input_size"]), int(cfg["num_classes"])

    def make(n: int) -> TensorSplit:
        return TensorSplit(
            torch.randn(n, c, s, s, generator=g), torch.randint(0, k, (n,), generator=g)
        )

    train = make(int(cfg["train_size"]))
    test = make(int(cfg["test_size"]))
    return train, lambda: test


#: The keys each source reads besides TensorDataModule's own (anything else is refused).
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "digits": (),
    "fashion_mnist": ("root",),
    "cifar10": ("root", "download", "verify"),
    "cifar100": ("root", "download", "verify"),
    "image_folder": ("root", "input_size", "skip_unreadable", "cache_dir"),
    "synthetic": (
        "in_channels",
        "input_size",
        "num_classes",
        "train_size",
        "test_size",
        "data_seed",
    ),
}

SOURCES: dict[str, Callable[[dict], Any]] = {
    "digits": _digits,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar("CIFAR10"),
    "cifar100": _cifar("CIFAR100"),
    "image_folder": _image_folder,
    "synthetic": _synthetic,
}
