"""Data modules: shapes, classes, seeded validation split, the test split left unread."""

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from blockqnn.data import modules
from blockqnn.data.tensors import random_crop_flip
from blockqnn.errors import ConfigError

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg.tar.gz"
FASHION = Path("/usr/share/datasets/fashion-mnist")


CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def build_datamodule(cfg: dict, *args, **kwargs):
    """The data module of conf/data/<name>.yaml (its values: their one home) with ``cfg``'s keys
    changed; a name without a file there is passed as given (to be refused)."""
    path = CONF_DATA / f"{cfg.get('name')}.yaml"
    base = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else {}
    base = {k: v for k, v in base.items() if not (isinstance(v, str) and "${" in v)}
    return modules.build_datamodule({**base, **cfg}, *args, **kwargs)


def first_batch(dm, which="train"):
    return next(iter(getattr(dm, f"{which}_dataloader")()))


def test_digits_split_and_shapes():
    dm = build_datamodule({"name": "digits", "val_fraction": 0.2}, batch_size=32, seed=0)
    dm.setup("fit")
    x, y = first_batch(dm)
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert dm.num_classes == 10 and dm.shape == (1, 8, 8)
    n_train, n_val = len(dm._train), len(dm._val)
    assert n_val == round((n_train + n_val) * 0.2)
    assert dm.test_reads == 0
    # Same seed, same split; another seed, another split.
    again = build_datamodule({"name": "digits", "val_fraction": 0.2}, batch_size=32, seed=0)
    other = build_datamodule({"name": "digits", "val_fraction": 0.2}, batch_size=32, seed=1)
    again.setup(), other.setup()
    assert torch.equal(again._val.images, dm._val.images)
    assert not torch.equal(other._val.images, dm._val.images)
    test_x, _ = first_batch(dm, "test")
    assert dm.test_reads == 1 and test_x.shape[1:] == (1, 8, 8)
    # The held-out test images are in neither the training nor the validation part.
    tr = {bytes(t.numpy()) for t in dm._train.images}
    assert not any(bytes(t.numpy()) in tr for t in dm._test.images[:50])


def write_cifar(root: Path, name: str, classes: int, n: int):
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    key = "labels" if name == "cifar10" else "fine_labels"
    files = (
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        if name == "cifar10"
        else ["train", "test"]
    )
    for f in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / f, "wb") as fh:
            pickle.dump(
                {
                    "data": data,
                    key: list(rng.integers(0, classes, n)),
                },
                fh,
            )
    meta = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    with open(folder / meta[0], "wb") as fh:
        pickle.dump({meta[1]: [f"c{i}" for i in range(classes)]}, fh)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_format(tmp_path, name, classes):
    write_cifar(tmp_path, name, classes, 40)
    cfg = {
        "name": name,
        "root": str(tmp_path),
        "download": False,
        "verify": False,
        "val_fraction": 0.1,
        "augment": {"crop_padding": 4, "flip": True},
    }
    dm = build_datamodule(cfg, batch_size=16, seed=0)
    x, y = first_batch(dm)
    assert x.shape == (16, 3, 32, 32) and int(y.max()) < classes
    n = 40 * (5 if name == "cifar10" else 1)
    assert len(dm._train) + len(dm._val) == n
    assert dm.test_reads == 0
    # md5 verification (the default) refuses files that are not the real ones.
    with pytest.raises(ConfigError, match="data.root"):
        build_datamodule({**cfg, "verify": True}, batch_size=16, seed=0).setup()


def write_folder(root: Path, classes=3, per_class=4, size=20):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    d / f"{i}.png"
                )


def test_image_folder(tmp_path):
    write_folder(tmp_path)
    dm = build_datamodule(
        {"name": "image_folder", "root": str(tmp_path), "input_size": 16, "val_fraction": 0.25},
        batch_size=4,
        seed=0,
    )
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 16, 16)
    assert dm.num_classes == 3 and len(dm._train) == 9 and len(dm._val) == 3
    assert dm.test_reads == 0
    with pytest.raises(ConfigError, match="train/<class>"):
        build_datamodule({"name": "image_folder", "root": str(tmp_path / "nope")}, 4, 0).setup()


def test_image_folder_streaming(tmp_path):
    write_folder(tmp_path, classes=3, per_class=4, size=40)
    dm = build_datamodule(
        {
            "name": "image_folder",
            "root": str(tmp_path),
            "input_size": 24,
            "in_memory": False,
            "num_workers": 0,
            "val_fraction": 0.25,
        },
        batch_size=4,
        seed=0,
    )
    x, y = first_batch(dm)
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32
    vx, _ = first_batch(dm, "val")
    assert vx.shape[1:] == (3, 24, 24)
    assert dm.num_classes == 3 and len(dm._train) == 9 and len(dm._val) == 3 and dm.test_reads == 0
    tx, _ = first_batch(dm, "test")
    assert tx.shape[1:] == (3, 24, 24) and dm.test_reads == 1


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="../shared/data/cifar10_jpg.tar.gz is absent")
def test_image_folder_on_shared_cifar10_jpegs(tmp_path):
    per = {}
    with tarfile.open(SHARED_CIFAR) as tar:
        members = []
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3:
                k = (parts[0], parts[1])
                if per.get(k, 0) < 5:
                    per[k] = per.get(k, 0) + 1
                    members.append(m)
        tar.extractall(tmp_path, members=members, filter="data")
    dm = build_datamodule(
        {"name": "image_folder", "root": str(tmp_path), "input_size": 32, "val_fraction": 0.2},
        batch_size=8,
        seed=0,
    )
    x, y = first_batch(dm)
    assert x.shape == (8, 3, 32, 32)
    assert dm.num_classes == 10 and len(dm._train) + len(dm._val) == 50


@pytest.mark.skipif(
    not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_debian_package():
    dm = build_datamodule(
        {"name": "fashion_mnist", "root": str(FASHION), "val_fraction": 0.1}, 128, 0
    )
    x, y = first_batch(dm)
    assert x.shape == (128, 1, 28, 28)
    assert len(dm._train) + len(dm._val) == 60000 and dm.num_classes == 10
    assert dm.test_reads == 0


def test_fashion_mnist_missing_root(tmp_path):
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte"):
        build_datamodule({"name": "fashion_mnist", "root": str(tmp_path)}, 8, 0).setup()


def test_synthetic_and_unknown():
    dm = build_datamodule(
        {
            "name": "synthetic",
            "in_channels": 3,
            "input_size": 16,
            "num_classes": 5,
            "train_size": 64,
            "test_size": 16,
            "data_seed": 0,
        },
        8,
        0,
    )
    assert first_batch(dm)[0].shape == (8, 3, 16, 16)
    # every key is required (its value lives in conf/data/synthetic.yaml, not in Python)
    partial = modules.build_datamodule(
        {
            "name": "synthetic",
            "val_fraction": 0.1,
            "augment": None,
            "in_channels": 3,
            "input_size": 16,
            "num_classes": 5,
            "train_size": 64,
            "data_seed": 0,
        },
        8,
        0,
    )
    with pytest.raises(ConfigError, match="data.test_size: no value set"):
        partial.setup("fit")
    with pytest.raises(ConfigError, match="unknown data"):
        build_datamodule({"name": "mnist", "val_fraction": 0.1, "augment": None}, 8, 0)


def test_augmentation_is_per_sample():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6).repeat(64, 1, 1, 1)
    out = random_crop_flip(x, 2, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert len({bytes(o.numpy()) for o in out}) > 10  # different crops/flips per sample


def test_subset_is_stratified_seeded_and_split_after():
    from blockqnn.data.modules import stratified_subset

    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    index = stratified_subset(labels, 101, torch.Generator().manual_seed(0))
    assert len(index) == 101 and len(set(index.tolist())) == 101
    assert torch.bincount(labels[index]).tolist() == [
        61,
        30,
        10,
    ]  # largest remainder: 60.6, 30.3, 10.1
    again = stratified_subset(labels, 101, torch.Generator().manual_seed(0))
    other = stratified_subset(labels, 101, torch.Generator().manual_seed(1))
    assert torch.equal(index, again) and not torch.equal(index, other)

    cfg = {"name": "digits", "val_fraction": 0.2, "subset": 500}
    dm = build_datamodule(cfg, batch_size=32, seed=0)
    dm.setup()
    assert len(dm._train) == 400 and len(dm._val) == 100
    full = build_datamodule({"name": "digits", "val_fraction": 0.2}, batch_size=32, seed=0)
    full.setup()
    counts = torch.bincount(torch.cat([dm._train.labels, dm._val.labels]), minlength=10)
    every = torch.cat([full._train.labels, full._val.labels])
    share = torch.bincount(every, minlength=10) * 500 / len(every)
    assert ((counts - share).abs() < 1).all()  # each class keeps its share, rounded
    first_batch(dm, "test"), first_batch(full, "test")
    assert len(dm._test) == len(full._test) > 0  # the held-out test split is never subset


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, "many", True])
def test_subset_refuses_bad_values(bad):
    with pytest.raises(ConfigError, match="data.subset"):
        build_datamodule({"name": "digits", "subset": bad}, 8, 0)


def test_subset_larger_than_the_data():
    with pytest.raises(ConfigError, match=r"data.subset=5000 is larger than the 1\d+ labelled"):
        build_datamodule({"name": "digits", "subset": 5000}, 8, 0).setup()


def test_subset_on_streaming_image_folder(tmp_path):
    write_folder(tmp_path, classes=3, per_class=6, size=20)
    dm = build_datamodule(
        {
            "name": "image_folder",
            "root": str(tmp_path),
            "input_size": 16,
            "in_memory": False,
            "num_workers": 0,
            "val_fraction": 0.25,
            "subset": 12,
        },
        batch_size=4,
        seed=0,
    )
    dm.setup()
    assert len(dm._train) == 9 and len(dm._val) == 3
    targets = dm._train.dataset.targets
    kept = [targets[i] for i in dm._train.indices + dm._val.indices]
    assert sorted(kept) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ConfigError, match="data.subset=99 is larger than the 18 images"):
        build_datamodule(
            {
                "name": "image_folder",
                "root": str(tmp_path),
                "in_memory": False,
                "num_workers": 0,
                "subset": 99,
            },
            4,
            0,
        ).setup()


@pytest.mark.parametrize("augment", [{}, {"crop_padding": 2, "flip": True, "cutout": 3}])
def test_channels_last_storage_gives_the_same_batches_in_the_networks_layout(augment):
    from blockqnn.data.tensors import TensorLoader, TensorSplit

    cl = torch.channels_last
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    plain = TensorSplit(images, torch.arange(20))
    nhwc = plain.to("cpu", cl)
    assert nhwc.images.is_contiguous(memory_format=cl) and not nhwc.images.is_contiguous()
    a = list(TensorLoader(plain, 6, shuffle=True, augment=augment, seed=1))
    b = list(TensorLoader(nhwc, 6, shuffle=True, augment=augment, seed=1))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))
    assert all(
        q[0].is_contiguous(memory_format=cl) for q in b
    )  # no layout copy left for the network
    assert all(p[0].is_contiguous() for p in a)


def test_the_evaluator_stores_the_data_in_the_networks_layout():
    from tests.conftest import lightning_evaluator

    cl = torch.channels_last
    small = (
        "debug=smoke",
        "data=synthetic",
        "data.train_size=64",
        "data.test_size=16",
    )  # 3 channels
    on = lightning_evaluator(*small, "network.channels_last=true").datamodule
    off = lightning_evaluator(*small).datamodule
    for split in (on._train, on._val):
        assert split.images.is_contiguous(memory_format=cl) and not split.images.is_contiguous()
    assert off._train.images.is_contiguous() and not off._train.images.is_contiguous(
        memory_format=cl
    )
    x, _ = next(iter(on.train_dataloader()))
    assert x.is_contiguous(memory_format=cl)
    result = lightning_evaluator(*small, "network.channels_last=true")(
        [[1, 1, 3, 0, 0], [2, 1, 3, 1, 0]]
    )
    assert (
        result["status"] == "ok" and 0.0 <= result["accuracy"] <= 1.0
    )  # trains end to end in NHWC


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_test_folder_missing_a_class_keeps_the_training_labels(tmp_path, in_memory):
    """test/ lacks class1: class2's test images keep label 2 (ImageFolder alone would call them
    1 and report a wrong test accuracy without a word); a test class unknown to train/ is refused."""
    import shutil

    write_folder(tmp_path, classes=3, per_class=4, size=24)
    shutil.rmtree(tmp_path / "test" / "class1")
    cfg = {"name": "image_folder", "root": str(tmp_path), "input_size": 16, "val_fraction": 0.25}
    if not in_memory:
        cfg.update(in_memory=False, num_workers=0)
    dm = build_datamodule(cfg, batch_size=8, seed=0)
    dm.setup()
    labels = torch.cat([y for _, y in dm.test_dataloader()])
    assert sorted(labels.tolist()) == [0] * 4 + [2] * 4
    (tmp_path / "test" / "class9").mkdir()
    shutil.copy(tmp_path / "test" / "class0" / "0.png", tmp_path / "test" / "class9" / "0.png")
    dm = build_datamodule(cfg, batch_size=8, seed=0)
    dm.setup()
    with pytest.raises(ConfigError, match="class9"):
        list(dm.test_dataloader())


def test_decoded_image_folders_are_shared_through_the_cache(tmp_path, monkeypatch):
    """data.cache_dir: a folder is decoded once; later builds map the decoded file (no decoding);
    a changed folder is decoded again."""
    from blockqnn.data import sources

    write_folder(tmp_path / "data")
    cfg = {
        "name": "image_folder",
        "root": str(tmp_path / "data"),
        "input_size": 16,
        "val_fraction": 0.25,
        "cache_dir": str(tmp_path / "cache"),
    }
    first = build_datamodule(cfg, batch_size=4, seed=0)
    first.setup()
    decoded = sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    assert len(decoded) == 1  # the training folder (the test split is read at the end only)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    real = sources._image_folder_split
    monkeypatch.setattr(sources, "_image_folder_split", no_decoding)
    again = build_datamodule(cfg, batch_size=4, seed=0)
    again.setup()
    assert torch.equal(again._train.images, first._train.images)
    assert torch.equal(again._val.labels, first._val.labels)
    # A new file in the folder: its content digest changes, so it is decoded again.
    Image.new("RGB", (20, 20)).save(tmp_path / "data" / "train" / "class0" / "new.png")
    with pytest.raises(AssertionError, match="decoded again"):
        build_datamodule(cfg, batch_size=4, seed=0).setup()
    monkeypatch.setattr(sources, "_image_folder_split", real)
    grown = build_datamodule(cfg, batch_size=4, seed=0)
    grown.setup()
    assert len(grown._train) + len(grown._val) == 13
    # The test split is cached under its own digest (its label map included), when it is read.
    grown.test_dataloader()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3


def test_processes_that_start_together_decode_a_folder_once(tmp_path):
    """Two processes (a pool's workers) asking for the same folder at once: one decodes under
    the cache's lock, the other waits and reads its file."""
    import subprocess
    import sys

    write_folder(tmp_path / "data", classes=3, per_class=30)
    code = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
        "from blockqnn.data.sources import _image_folder\n"
        f"train, _ = _image_folder({{'root': {str(tmp_path / 'data')!r}, 'input_size': 16, "
        f"'skip_unreadable': False, 'cache_dir': {str(tmp_path / 'cache')!r}}})\n"
        "print('images', len(train))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all("images 90" in o for o in outs)
    assert sum("decoded" in o for o in outs) == 1, outs
