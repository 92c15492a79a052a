"""Bad input refused at start-up with one clear message, nothing written: agent constants out of
range, unreadable files in an image folder, re-evaluation settings a search cannot honour."""

import numpy as np
import pytest
from PIL import Image

from blockqnn.errors import ConfigError
from blockqnn.search.setup import validate
from tests.conftest import compose_search


@pytest.mark.parametrize(
    "override,message",
    [
        ("agent.params.learning_rate=-0.1", "agent.params.learning_rate=-0.1 must be in (0, 1]"),
        ("agent.params.learning_rate=0", "agent.params.learning_rate=0 must be in (0, 1]"),
        ("agent.params.learning_rate=1.5", "agent.params.learning_rate=1.5 must be in (0, 1]"),
        ("agent.params.discount=1.5", "agent.params.discount=1.5 must be in [0, 1]"),
        ("agent.params.discount=-0.1", "agent.params.discount=-0.1 must be in [0, 1]"),
        ("agent.params.replay_size=0", "agent.params.replay_size=0 must be >= 1"),
        ("agent.params.q_init=nan", "agent.params.q_init=nan must be a number"),
        ("agent.params.count_bonus=-0.1", "agent.params.count_bonus=-0.1 must be >= 0"),
        ("agent=evolution agent.params.population=0", "agent.params.population=0 must be >= 1"),
        (
            "agent=evolution agent.params.sample=30",
            "agent.params.sample=30 must be in 1..population",
        ),
        (
            "agent=tpe agent.params.n_startup_trials=-1",
            "agent.params.n_startup_trials=-1 must be >= 0",
        ),
        ("agent.epsilon_schedule=[[1.5,3]]", "outside [0, 1]"),
        ("agent.batch_size=0", "agent.batch_size=0"),
        ("search.reevaluate.top=-1", "search.reevaluate.top=-1 must be >= 0"),
        (
            "search.reevaluate.every_iteration=true search.asynchronous=true",
            "needs synchronous iterations",
        ),
        # unknown keys, in any group, are refused with the key named
        ("+data.colour=1", "data.colour is not a key of data=digits"),
        ("data=synthetic +data.foo=2", "data.foo is not a key of data=synthetic"),
        ("+network.colour=1", "network.colour: Key 'colour' not in 'NetworkConfig'"),
        ("+recipe.foo=1", "recipe.foo: Key 'foo' not in 'RecipeConfig'"),
        ("+space.bar=2", "space.bar: Key 'bar' not in 'SpaceConfig'"),
        ("+search.reevaluate.x=1", "search.reevaluate.x: Key 'x' not in 'ReevaluateConfig'"),
        ("+trainer.gradient_clipping=1", "trainer.gradient_clipping is not an argument of"),
        ("+evaluator.colour=1", "colour"),
        ("+agent.params.colour=1", "cannot build the agent"),
    ],
)
def test_out_of_range_settings_are_refused_before_anything(tmp_path, override, message):
    cfg = compose_search("debug=smoke", "logger=none", *override.split())
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    assert not any(tmp_path.iterdir())


def _folder(root, corrupt=()):
    for split in ("train", "test"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(d / f"{i}.png")
    for name in corrupt:
        (root / "train" / "a" / name).write_bytes(np.random.default_rng(0).bytes(300))


def test_unreadable_image_files_are_named_or_skipped(tmp_path):
    from blockqnn.data.sources import _image_folder_split

    _folder(tmp_path, corrupt=("bad.png", "worse.png"))
    with pytest.raises(ConfigError) as err:
        _image_folder_split(tmp_path / "train", 8)
    text = str(err.value)
    assert "2 unreadable image file(s)" in text and "bad.png" in text and "worse.png" in text
    assert "data.skip_unreadable=true" in text
    split = _image_folder_split(tmp_path / "train", 8, skip_unreadable=True)
    assert len(split.labels) == 6 and sorted(split.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_search_on_a_folder_with_a_corrupt_file_stops_at_start_up(tmp_path):
    _folder(tmp_path / "data", corrupt=("bad.png",))
    base = [
        "debug=smoke",
        "logger=none",
        "data=image_folder",
        f"data.root={tmp_path / 'data'}",
        "data.input_size=8",
        "data.val_fraction=0.5",
    ]
    with pytest.raises(ConfigError, match="bad.png"):
        validate(compose_search(*base))
    validate(compose_search(*base, "data.skip_unreadable=true"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["reward.flops_reference=plian"], "reward.flops_reference: unknown block preset 'plian'"),
        (["+model.optimizer.lrr=0.1"], "model.optimizer.*unexpected keyword argument 'lrr'"),
        (["+model.scheduler.gama=0.1"], "model.scheduler.*unexpected keyword argument 'gama'"),
        (
            ["callbacks=early_stopping", "+callbacks.early_stopping.patiense=2"],
            "(?s)callbacks:.*patiense",
        ),
        (
            ["executor=pool", "trainer=gpu", "evaluator.devices=2"],
            "a pool worker owns one GPU",
        ),
        (
            ["executor=ray", "trainer=gpu", "evaluator.devices=2", "executor.num_gpus=1"],
            "executor.num_gpus=2",
        ),
        (["space=nb201"], "space=nb201 needs evaluator=nb201"),
    ],
)
def test_training_parts_and_placements_are_refused_before_any_training(overrides, message):
    """Before: a misspelt reward reference, optimizer, scheduler or callback key failed only as
    three failed evaluations; impossible DDP placements were not refused at all."""
    with pytest.raises(ConfigError, match=message):
        validate(compose_search("debug=smoke", "logger=none", *overrides))
