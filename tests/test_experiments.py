"""Every experiment config runs, at a tiny size (debug=smoke / smoke_train), with its own recipe,
network, agent and schedule; only the data are swapped for synthetic tensors of the same kind
(no data set here is large enough or present for all of them) and the trainer for the CPU.
The image-folder experiments run on a real tiny folder in tests/test_imagenet.py.

Bug caught: an experiment whose keys no longer compose or build (a renamed group or key, a
value the schema refuses, a recipe the network cannot run), found before a user does."""

from pathlib import Path

import pytest

from tests.conftest import run_entry

EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")
)
#: Run on an image folder by tests/test_imagenet.py.
ON_IMAGE_FOLDERS = {"final_imagenet", "search_image_folder"}
TINY = [
    "data=synthetic",
    "data.train_size=96",
    "data.test_size=32",
    "data.subset=null",
    "data.val_fraction=0.25",
    "trainer=cpu",
    "logger=none",
]


def test_every_experiment_is_run_somewhere():
    assert EXPERIMENTS and ON_IMAGE_FOLDERS <= set(EXPERIMENTS)
    imagenet_tests = (Path(__file__).parent / "test_imagenet.py").read_text()
    assert all(f"experiment={name}" in imagenet_tests for name in ON_IMAGE_FOLDERS)


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e not in ON_IMAGE_FOLDERS])
def test_experiment_runs_at_a_tiny_size(name, tmp_path):
    train = name.startswith("final_")  # train.py's experiments; the others are searches
    entry, extra, output = (
        (
            "train",
            ["debug=smoke_train", "block=resnet_basic", "train.batch_size=32"],
            "metrics.json",
        )
        if train
        else (
            "search",
            ["debug=smoke", "agent.epsilon_schedule=[[1.0,1],[0.5,1]]", "agent.batch_size=2"],
            "best_block.json",
        )
    )
    code, err = run_entry(entry, tmp_path, f"experiment={name}", extra[0], *TINY, *extra[1:])
    assert code == 0, err[-3000:]
    assert (tmp_path / output).exists()
